"""What take.sh shows from MLflow, read through the tracking server's REST API.

    python mlflow_lookup.py BASE_URL EXPERIMENT_NAME COLUMNS

COLUMNS: space-separated run-table columns wanted, as metrics.KEY / tags.KEY / params.KEY; those
that no run has are dropped (if no metric is left, the newest run's first six metrics are used).

Prints one line, fields separated by the ASCII unit separator (0x1f; a field may be empty):
  experiment id;
  the run for the learning-curve shot: the newest run that logged a metric over several steps
    (a per-epoch curve), else the newest run;
  that run's name;
  the newest run's name (text the runs table must show before its shot);
  a metric of the chosen run (text its charts page must show);
  a regular expression matching the chosen run's multi-step metrics ("" when it has none), to
    type into the "Search metric charts" box so the curves come first;
  the runs table's view state (columns, their order and widths; the newest run first), as JSON
    for the MLflow UI's local storage (MLflowLocalStorage-1.1-ExperimentPage-["ID"]-...).
"""

from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


def api(base: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def main() -> int:
    base, name, wanted = sys.argv[1], sys.argv[2], sys.argv[3].split()
    try:
        query = urllib.parse.urlencode({"experiment_name": name})
        exp = api(base, f"/api/2.0/mlflow/experiments/get-by-name?{query}")["experiment"]
        exp = exp["experiment_id"]
    except urllib.error.HTTPError as e:
        sys.exit(f"mlflow_lookup.py: no experiment {name!r} ({e})")
    runs = api(
        base,
        "/api/2.0/mlflow/runs/search",
        {"experiment_ids": [exp], "max_results": 200, "order_by": ["attributes.start_time DESC"]},
    ).get("runs", [])
    if not runs:
        sys.exit(f"mlflow_lookup.py: experiment {name!r} has no runs")

    def keys(run: dict, kind: str) -> list[str]:
        return [m["key"] for m in run["data"].get(kind, [])]

    def curves(run: dict) -> list[str]:
        # runs/search returns each metric's latest value; a step above 0 means a history.
        return sorted(m["key"] for m in run["data"].get("metrics", []) if int(m.get("step", 0)) > 0)

    chosen = next((r for r in runs if curves(r)), runs[0])
    curve_keys = curves(chosen)
    some_metric = (curve_keys or sorted(keys(chosen, "metrics")) or ["Model metrics"])[0]
    curve_regex = "^(" + "|".join(re.escape(k) for k in curve_keys) + ")$" if curve_keys else ""

    present = {
        kind: set().union(*(keys(r, kind) for r in runs)) for kind in ("metrics", "tags", "params")
    }
    columns = []
    for col in wanted:
        kind, _, key = col.partition(".")
        if key in present.get(kind, ()):
            columns.append(f"{kind}.`{key}`")
    if not any(c.startswith("metrics.") for c in columns):
        columns += [f"metrics.`{k}`" for k in sorted(keys(runs[0], "metrics"))[:6]]
    # The Models column links each run to its registered version; keep it first. Widths fit a
    # column's name and a full float (0.3748154554731375), so nothing is cut to "0.37481…".
    selected = ["attributes.`Models`", *columns]
    widths = {c: max(160, 7 * len(c.split("`")[1]) + 34) for c in columns}
    view_state = {
        "selectedColumns": selected,
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *selected],
        "columnWidths": widths,
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "searchFilter": "",
        "datasetsFilter": [],
        "runsExpanded": {},
        "runsPinned": [],
        "runsHidden": [],
        "runsVisibilityMap": {},
        "runsHiddenMode": "FIRST_10_RUNS",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "autoRefreshEnabled": True,
    }

    print(
        exp,
        chosen["info"]["run_id"],
        chosen["info"].get("run_name", ""),
        runs[0]["info"].get("run_name", ""),
        some_metric,
        curve_regex,
        json.dumps(view_state),
        sep="\x1f",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
