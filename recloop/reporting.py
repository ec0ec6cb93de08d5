"""Reports the loop writes: the cycle summary (a Prefect artifact) and metric plots.

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``: no global figure state, no GUI backend, nothing left open after a call.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Series keep their order, so a model drawn first in every plot keeps its colour across plots.
PALETTE = ("#1f77b4", "#d62728", "#7f7f7f", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2")


def format_number(value: float | int | None, digits: int = 4) -> str:
    """A table cell: ``digits`` decimals, or empty for None/NaN (nothing measured)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a GitHub Markdown table (cells already formatted or str()-able)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _figure(title: str, ylabel: str, xlabel: str | None) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)  # attaches the Agg canvas: savefig needs no pyplot backend
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    if xlabel:
        axes.set_xlabel(xlabel)
    axes.grid(True, axis="y", alpha=0.3)
    return figure, axes


def _check(x_labels: Sequence[str], series: dict[str, Sequence[float]]) -> None:
    for name, values in series.items():
        if len(values) != len(x_labels):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(x_labels)} labels")


def _value(v: float | None) -> float:
    return float("nan") if v is None else float(v)


def _finish(figure: Any, axes: Any, x_labels: Sequence[str], path: str | Path) -> Path:
    """Label the x positions 0..n-1, add the legend and write the PNG."""
    axes.set_xticks(list(range(len(x_labels))), list(x_labels))
    # Beside the axes, not inside: a legend placed "best" still covers a bar or a line.
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_series(
    path: str | Path,
    x_labels: Sequence[str],
    series: dict[str, Sequence[float | None]],
    title: str,
    ylabel: str,
    *,
    xlabel: str | None = None,
    dashed: Sequence[str] = (),
) -> Path:
    """A line plot, one line per entry of ``series`` (one value per x label; None/NaN = gap).

    Names in ``dashed`` are drawn dashed (e.g. the baselines beside the models). Writes a PNG.
    """
    _check(x_labels, series)
    figure, axes = _figure(title, ylabel, xlabel)
    x = list(range(len(x_labels)))
    for i, (name, values) in enumerate(series.items()):
        axes.plot(
            x,
            [_value(v) for v in values],
            label=name,
            color=PALETTE[i % len(PALETTE)],
            marker="o",
            linestyle="--" if name in dashed else "-",
        )
    return _finish(figure, axes, x_labels, path)


def cycle_markdown(summary: dict[str, Any], primary: str = "ndcg_at_10") -> str:
    """The Prefect artifact of one cycle: candidate vs champion vs baselines, the gate's decision
    and reason, and where the MLflow run is.

    ``summary`` is what ``flows.cycle.train_evaluate_promote`` returns: ``training``,
    ``version``, ``promoted``, ``status``, ``champion``, ``serving``, ``reason``,
    ``champion_before``, ``batches``, ``metrics`` (an
    evaluation report's ``to_dict()``), ``data`` and ``mlflow`` (``run_id``, ``run_url``,
    ``tracking_uri``, ``experiment_id``, ``model_name``). ``primary`` is the gate's metric.
    """
    metrics = summary.get("metrics", {})
    rows: dict[str, dict[str, float]] = metrics.get("rows", {})
    ks = metrics.get("ks") or [10]
    names = [f"{m}_at_{k}" for k in ks for m in ("ndcg", "recall")] + ["mrr"]
    if primary not in names:
        names.insert(0, primary)
    base = rows.get("candidate", {}).get(primary)

    def line(label: str, values: dict[str, float]) -> list[str]:
        cells = [format_number(values.get(name)) for name in names]
        value = values.get(primary)
        if label == "candidate" or not base or value is None:
            relative = ""
        else:  # how far the candidate is above (+) or below (-) this row on the gate's metric
            relative = f"{(base - value) / value:+.1%}" if value else "n/a"
        return [label, *cells, relative, str(int(values.get("n_cases", 0)))]

    primary_label = primary.replace("_at_", "@")
    header = [
        "model",
        *(n.replace("_at_", "@") for n in names),
        f"candidate vs row ({primary_label})",
    ]
    table = [line(model, values) for model, values in rows.items()]
    # The gate's forgetting check: "previous window" or "earlier events" (tasks.prepare).
    scope = metrics.get("retention_scope") or "earlier events"
    table += [
        line(f"{model} on {scope}", values)
        for model, values in metrics.get("retention", {}).items()
    ]
    version = summary.get("version", "-")
    promoted = bool(summary.get("promoted"))
    mlflow_info = summary.get("mlflow", {})
    model = mlflow_info.get("model_name", "recloop")
    serving = str(summary.get("serving") or "")
    if promoted:
        decision = f"**promoted**: `{model}@champion` is now version {version} (learned)"
    elif summary.get("status") == "baseline-promoted":
        decision = (
            f"**the {serving.replace('_', ' ')} baseline serves**: `{model}@champion` is now "
            f"version {summary.get('champion')}, the baseline fitted on the same data; candidate "
            f"version {version} is `{model}@challenger`"
        )
    else:
        kind = f", {serving.replace('_', ' ')}" if serving else ""
        decision = (
            f"**kept champion** (version {summary.get('champion_before') or '-'}{kind}); "
            f"version {version} is `{model}@challenger`"
        )
    lines = [
        f"# recloop {summary.get('training', 'cycle')}: candidate version {version}",
        "",
        f"Decision: {decision}",
        "",
        f"Reason: {summary.get('reason', '')}",
        "",
        *markdown_table([*header, "cases"], table),
        "",
        f"All models judged on the same {summary.get('data', {}).get('eval_users', '?')} held-out "
        "newest events (full ranking, history excluded); the gate's metric is "
        f"`{primary}`.",
        "",
        f"- batches: {', '.join(summary.get('batches', [])) or '-'}",
        f"- champion before: {summary.get('champion_before') or '-'}",
    ]
    if mlflow_info.get("run_id"):
        lines += [
            f"- MLflow run: [{mlflow_info['run_id']}]({mlflow_info.get('run_url', '')}) in "
            f"experiment {mlflow_info.get('experiment_id', '?')} of "
            f"`{mlflow_info.get('tracking_uri', '')}` (artifacts: this report as `report.md`, "
            f"`evaluation/report.md`, `evaluation/{primary}_by_version.png`)",
            f"- model: `models:/{model}/{version}`",
        ]
        if not str(mlflow_info.get("tracking_uri", "")).startswith(("http://", "https://")):
            lines.append(
                f"- open the link after `mlflow ui --backend-store-uri "
                f"{mlflow_info.get('tracking_uri', '')}`"
            )
    return "\n".join(lines) + "\n"
