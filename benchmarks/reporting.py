"""What the benchmark reports share: the Markdown + JSON pair, the bar plots, the machine line.

JSON is written strictly (NaN and infinities become ``null``), so any JSON reader can load a report.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recloop.reporting import PALETTE, _check, _figure, _finish, _value


def machine_description() -> str:
    """One line naming the machine a benchmark ran on (architecture, cores, torch, GPU)."""
    import torch  # lazy: the report helpers are usable without paying for the torch import

    line = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        line += f", {torch.cuda.get_device_name(0)}"
    return line


def to_jsonable(value: Any) -> Any:
    """``value`` with NaN/inf floats as None and tuples as lists, recursively (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return to_jsonable(value.item())
    return value


def write_report(
    out_dir: str | Path, stem: str, markdown: str, figures: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.md`` and ``<out_dir>/<stem>.json``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md_path.write_text(markdown if markdown.endswith("\n") else markdown + "\n", encoding="utf-8")
    text = json.dumps(to_jsonable(figures), indent=2, allow_nan=False, default=str)
    json_path.write_text(text + "\n", encoding="utf-8")
    return md_path, json_path


def plot_bars(
    path: str | Path,
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    title: str,
    ylabel: str,
    *,
    xlabel: str | None = None,
    log_scale: bool = False,
    annotate: bool = True,
) -> Path:
    """Grouped bars: one group per x label, one bar per entry of ``series``. Writes a PNG.

    ``annotate`` writes each bar's value above it (3 significant digits).
    """
    _check(x_labels, series)
    figure, axes = _figure(title, ylabel, xlabel)
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        x = [j + (i - (n - 1) / 2) * width for j in range(len(x_labels))]
        heights = [_value(v) for v in values]
        bars = axes.bar(x, heights, width=width, label=name, color=PALETTE[i % len(PALETTE)])
        if annotate:
            labels = ["" if math.isnan(h) else f"{h:.3g}" for h in heights]
            axes.bar_label(bars, labels=labels, fontsize="x-small", padding=2)
    if log_scale:
        axes.set_yscale("log")
    return _finish(figure, axes, x_labels, path)
