"""The gate serves the best of candidate, champion and baselines: real flow, Prefect and MLflow.

The data trend: every user's newest events are on a few "hot" items of the moment, after a
history of older items, so recent popularity is the model to beat and a tiny learned model loses
to it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recloop.paths import get_home

pytestmark = pytest.mark.flows

DAY = 86400


def _trending(seed: int, users: int, start_day: int, days: int, hot: list[str]) -> pd.DataFrame:
    """Eight events per user on 200 older and 20 evergreen items, then two of ``hot`` at the end
    of the period."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        for day in np.sort(rng.uniform(start_day, start_day + days - 5, 8)):
            item = f"e{rng.integers(20)}" if rng.random() < 0.4 else f"o{rng.integers(200)}"
            rows.append((f"u{u}", item, int(day * DAY)))
        for j, item in enumerate(rng.choice(hot, 2, replace=False)):
            rows.append((f"u{u}", str(item), int((start_day + days - 4 + 2 * j) * DAY) + u))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return frame.drop_duplicates(["user_id", "item_id"], keep="last")


def _catalogue() -> pd.DataFrame:
    ids = [f"o{i}" for i in range(200)] + [f"e{i}" for i in range(20)]
    ids += [f"h{i}" for i in range(10)]
    kinds = {"o": "an older item", "e": "an evergreen", "h": "the hit of the season"}
    return pd.DataFrame(
        {"item_id": ids, "title": ids, "text": [f"{kinds[i[0]]} number {i[1:]}" for i in ids]}
    )


def test_recent_popularity_serves_when_it_wins_and_the_update_starts_from_the_learned_line(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from flows.feedback_loop import feedback_loop
    from recloop import registry
    from recloop.config import load_config

    home = get_home(tmp_path / "home")
    files = []
    for index, frame in enumerate(
        [
            _trending(1, 150, 0, 100, [f"h{i}" for i in range(5)]),
            _trending(2, 150, 100, 20, [f"h{i}" for i in range(5, 10)]),
        ]
    ):
        path = tmp_path / f"batch{index}.parquet"
        frame.to_parquet(path, index=False)
        files.append(str(path))
    items = tmp_path / "items.parquet"
    _catalogue().to_parquet(items, index=False)

    first = feedback_loop(
        batch_files=files[:1], items_files=[str(items)], home=str(home.root),
        config_path=str(tiny_config),
    )  # fmt: skip
    rows = first["metrics"]["rows"]
    assert rows["recent_popularity"]["ndcg_at_10"] > max(
        rows[name]["ndcg_at_10"] for name in ("candidate", "popularity", "transitions")
    )
    assert first["status"] == "baseline-promoted" and not first["promoted"]
    assert first["serving"] == "recent_popularity"
    assert (first["version"], first["champion"]) == ("1", "2")
    assert "serve recent popularity" in first["reason"]

    config = load_config(tiny_config)
    reg = registry.configure(home, config)
    assert reg.champion_version() == "2" and reg.challenger_version() == "1"
    assert reg.version_info("1")["tags"]["model_kind"] == "learned"
    assert reg.version_info("2")["tags"]["model_kind"] == "baseline:recent_popularity"
    # Served through the registry, the way users load it: the hot items first.
    model, version, kind = registry.load_champion_pyfunc(config, home)
    top = model.predict(pd.DataFrame({"user_id": ["x"], "history": [["o1"]]}), params={"k": 5})
    assert version == "2" and sorted(top.iloc[0]["item_ids"]) == [f"h{i}" for i in range(5)]
    client = MlflowClient(reg.uri)
    note = client.get_run(reg.version_info("2")["run_id"]).data.tags["mlflow.note.content"]
    assert "version 2 promoted to champion" in note

    # The next batch: the update starts from the newest learned version (v1), is judged against
    # the baseline champion, and whoever serves afterwards is the best on those events.
    second = feedback_loop(batch_files=files[1:], home=str(home.root), config_path=str(tiny_config))
    assert second["version"] == "3" and second["champion_before"] == "2"
    tags = reg.version_info("3")["tags"]
    assert tags["warm_start"] == "true" and tags["parent_version"] == "2"
    rows = second["metrics"]["rows"]
    best = max(rows[name]["ndcg_at_10"] for name in rows)
    served = {"learned": "candidate", "": "champion"}.get(second["serving"], second["serving"])
    if second["status"] == "kept-champion":
        served = "champion"
    assert rows[served]["ndcg_at_10"] == best
    assert reg.champion_version() == second["champion"]
