"""``recloop bench quality`` on a tiny dataset: every row, the targets and both report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from models import encoder
from recloop import bench_quality
from recloop.bench_quality import prepare_dataset, run_quality
from recloop.config import load_config
from recloop.data import write_dataset
from recloop.demo import simulate

pytestmark = pytest.mark.model

# A few MLM steps on short texts: the pipeline is under test here, not the adaptation's size.
TINY_ENCODER = {
    "max_length": 24,
    "max_steps": 3,
    "head_warmup_steps": 10,
    "head_warmup_tokens": 512,
    "eval_max_texts": 12,
}


def test_quality_report_has_baselines_variants_and_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # log to this test's home
    data = write_dataset(simulate(seed=11, n_users=80, n_items=90), tmp_path / "demo")
    config = load_config(
        overrides={
            "encoder": TINY_ENCODER,
            "model": {"hidden_size": 32, "num_layers": 1, "max_seq_len": 20},
            "train": {"epochs": 3, "patience": 2},
        }
    )
    results = run_quality(
        {"demo": data},
        config,
        tmp_path / "out",
        variants=("text+id", "id", "text+id-no-mlm"),
        cache_dir=tmp_path / "cache",
        encoder_dir=tmp_path / "encoders",
        log_mlflow=True,
        home=tmp_path / "home",
    )
    entry = results["datasets"]["demo"]
    rows = entry["rows"]
    assert {"popularity", "transitions", "text+id", "id", "text+id-no-mlm"} <= set(rows)
    for row in rows.values():
        assert 0.0 <= row["test"]["ndcg_at_10"] <= 1.0
    # A seeded sequential simulator: the trained model must clear popularity by a wide margin.
    assert rows["text+id"]["test"]["ndcg_at_10"] > 2 * rows["popularity"]["test"]["ndcg_at_10"]
    targets = entry["targets"]
    best = max(rows[b]["test"]["ndcg_at_10"] for b in ("popularity", "transitions"))
    assert targets["best_baseline_ndcg_at_10"] == best
    model = rows["text+id"]["test"]["ndcg_at_10"]
    assert targets["beats_1_2x_baseline"] == (model >= 1.2 * best)
    assert targets["text_id_at_least_id"] == (model >= rows["id"]["test"]["ndcg_at_10"])

    # The default variant embeds with the encoder MLM-pretrained on this catalogue, the
    # ablation with the base encoder; the MLM figures are reported.
    assert rows["text+id"]["text_encoder"] == "mlm"
    assert rows["text+id-no-mlm"]["text_encoder"] == "base"
    assert rows["id"]["text_encoder"] is None
    mlm = entry["mlm"]
    assert mlm["steps"] == 3 and mlm["head_warmup_steps"] == 10
    assert math.isfinite(mlm["perplexity_before"]) and math.isfinite(mlm["perplexity_after"])
    assert mlm["perplexity_before"] < mlm["perplexity_untrained_head"]
    assert mlm["total_seconds"] > 0
    assert (tmp_path / "encoders" / "demo" / encoder.REPORT_FILE).exists()
    # one embedding shard per encoder: the adapted one and the base one
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2

    report = (tmp_path / "out" / "quality.md").read_text(encoding="utf-8")
    assert "## demo" in report and "transitions" in report
    assert "MLM pretraining of the text encoder" in report and "MLM ablation" in report
    saved = json.loads((tmp_path / "out" / "quality.json").read_text())
    assert saved["protocol"] == "loo"
    assert saved["datasets"]["demo"]["mlm"]["perplexity_after"] == mlm["perplexity_after"]
    assert "![test NDCG@10 per dataset](quality-ndcg.png)" in report
    assert all(Path(f).exists() for f in results["files"])

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("recloop-benchmarks").experiment_id])
    assert run.info.run_id == results["mlflow_run_id"] and run.info.run_name == "quality"
    assert run.data.metrics["demo/text_id/ndcg_at_10"] == pytest.approx(model)
    assert run.data.metrics["demo/mlm_perplexity_after"] == pytest.approx(mlm["perplexity_after"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"quality.md", "quality.json", "quality-ndcg.png", "quality-seconds.png"}


def test_mlm_runs_only_when_a_selected_variant_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_mlm(*args, **kwargs):
        raise AssertionError("MLM pretraining ran for variants that do not use it")

    monkeypatch.setattr(bench_quality, "pretrain_mlm", no_mlm)
    data = write_dataset(simulate(seed=5, n_users=30, n_items=20), tmp_path / "demo")
    config = load_config(overrides={"encoder": TINY_ENCODER})
    for variants in (("id",), ("text+id-no-mlm",)):
        prepared = prepare_dataset(
            "demo", data, config, tmp_path / "cache", variants=variants, encoder_dir=tmp_path
        )
        assert prepared.mlm is None and prepared.embeddings.shape == (20, 384)
        assert np.isfinite(prepared.embeddings).all()
    with pytest.raises(ValueError, match="unknown variant"):
        run_quality({"demo": data}, config, tmp_path / "out", variants=("text+id-typo",))
