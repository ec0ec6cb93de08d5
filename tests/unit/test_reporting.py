"""Report helpers: strict JSON, tables, PNG plots without pyplot state."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmarks.reporting import machine_description, plot_bars, to_jsonable, write_report
from recloop.reporting import format_number, markdown_table, plot_series

pytestmark = pytest.mark.unit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_write_report_is_strict_json_and_markdown(tmp_path: Path) -> None:
    figures = {"a": float("nan"), "b": [1.5, float("inf")], "c": (np.float32(0.25), np.int64(3))}
    md, js = write_report(tmp_path / "out", "bench", "# Title", figures)
    assert md.read_text(encoding="utf-8") == "# Title\n"
    # json.loads would accept NaN; parse_constant rejects it, as a strict reader does.
    loaded = json.loads(js.read_text(encoding="utf-8"), parse_constant=lambda c: 1 / 0)
    assert loaded == {"a": None, "b": [1.5, None], "c": [0.25, 3]}
    assert to_jsonable({"x": {"y": -math.inf}}) == {"x": {"y": None}}


def test_cells_and_tables() -> None:
    assert format_number(0.123456) == "0.1235"
    assert format_number(0.5, 1) == "0.5"
    assert format_number(float("nan")) == "" and format_number(None) == ""
    assert format_number(7) == "7"
    assert markdown_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]


def test_plots_write_png_and_leave_no_pyplot_figure(tmp_path: Path) -> None:
    series = {"model": [0.1, 0.2, None], "baseline": [0.05, float("nan"), 0.07]}
    line = plot_series(
        tmp_path / "a" / "line.png", ["1", "2", "3"], series, "t", "y", dashed=["baseline"]
    )
    bars = plot_bars(tmp_path / "bars.png", ["1", "2", "3"], series, "t", "s", log_scale=True)
    for path in (line, bars):
        assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # Figure objects only: nothing registered with pyplot


def test_plot_rejects_series_of_the_wrong_length(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 values for 3 labels"):
        plot_series(tmp_path / "x.png", ["1", "2", "3"], {"m": [0.1, 0.2]}, "t", "y")


def test_machine_description_names_cores_and_torch() -> None:
    line = machine_description()
    assert "cores" in line and "torch" in line
