# The two commands of the quick start. Both set up what they need (scripts/bootstrap).
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_NAME ?= demo

.PHONY: demo test setup lint typecheck unit lab-test bench clean

setup:
	@VENV=$(VENV) scripts/bootstrap

demo: setup
	$(BIN)/hakube demo --name $(DEMO_NAME)
	@echo "The lab stays up to explore: $(BIN)/hakube lab status --name $(DEMO_NAME); remove it with $(BIN)/hakube lab down --name $(DEMO_NAME)"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -m "not lab"

lab-test: setup
	$(BIN)/pytest -m lab

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/hostile_yaml.py
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/transport_roundtrip.py
	$(BIN)/python bench/lab_up.py
	$(BIN)/python bench/apply.py
	$(BIN)/python bench/drill.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
