"""``recloop bench quality`` on a tiny dataset: every row, the targets and both report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recloop.bench_quality import run_quality
from recloop.config import load_config
from recloop.data import write_dataset
from recloop.demo import simulate

pytestmark = pytest.mark.model


def test_quality_report_has_baselines_variants_and_targets(tmp_path: Path) -> None:
    data = write_dataset(simulate(seed=11, n_users=80, n_items=90), tmp_path / "demo")
    config = load_config(
        overrides={
            "model": {"hidden_size": 32, "num_layers": 1, "max_seq_len": 20},
            "train": {"epochs": 3, "patience": 2},
        }
    )
    results = run_quality(
        {"demo": data},
        config,
        tmp_path / "out",
        variants=("text+id", "id"),
        cache_dir=tmp_path / "cache",
    )
    rows = results["datasets"]["demo"]["rows"]
    assert {"popularity", "transitions", "text+id", "id"} <= set(rows)
    for row in rows.values():
        assert 0.0 <= row["test"]["ndcg_at_10"] <= 1.0
    # A seeded sequential simulator: the trained model must clear popularity by a wide margin.
    assert rows["text+id"]["test"]["ndcg_at_10"] > 2 * rows["popularity"]["test"]["ndcg_at_10"]
    targets = results["datasets"]["demo"]["targets"]
    best = max(rows[b]["test"]["ndcg_at_10"] for b in ("popularity", "transitions"))
    assert targets["best_baseline_ndcg_at_10"] == best
    model = rows["text+id"]["test"]["ndcg_at_10"]
    assert targets["beats_1_2x_baseline"] == (model >= 1.2 * best)
    assert targets["text_id_at_least_id"] == (model >= rows["id"]["test"]["ndcg_at_10"])
    report = (tmp_path / "out" / "quality.md").read_text(encoding="utf-8")
    assert "## demo" in report and "transitions" in report
    assert json.loads((tmp_path / "out" / "quality.json").read_text())["protocol"] == "loo"
