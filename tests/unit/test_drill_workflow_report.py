"""The drill's report and table say what answered behind HAProxy: the lab stand-in."""

from __future__ import annotations

from rich.console import Console

from hakube_lab.drill.workflow import DrillReport, figures_table


def test_report_json_names_the_stand_in_backend() -> None:
    data = DrillReport("hakube defaults").as_dict()
    assert data["backend"] == "lab stand-in for kube-apiserver"


def test_figures_table_names_the_stand_in_backend() -> None:
    console = Console(record=True, width=200)
    console.print(figures_table([DrillReport("hakube defaults"), DrillReport("tutorial")]))
    assert "backend: lab stand-in for kube-apiserver" in console.export_text()
