"""``recloop bench quality`` on a tiny dataset: every row, the targets and both report files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from benchmarks import quality as bench_quality
from benchmarks.quality import prepare_dataset, run_quality
from models import encoder
from recloop.baselines import RecentPopularity
from recloop.config import GateConfig, load_config
from recloop.data import read_dataset, split_windows, write_dataset
from recloop.demo import simulate
from recloop.evaluation import evaluate_scorer
from recloop.gate import choose_champion
from recloop.protocols import temporal_split

pytestmark = pytest.mark.model

# A few MLM steps on short texts: the pipeline is under test here, not the adaptation's size.
TINY_ENCODER = {"max_length": 24, "max_steps": 3, "head_warmup_steps": 10}
# A small recommender for a few epochs: enough to rank the simulated shop above popularity.
TINY_MODEL = {
    "model": {"hidden_size": 32, "num_layers": 1, "max_seq_len": 20},
    "train": {"epochs": 3, "patience": 2},
}
BASELINES = ("popularity", "recent_popularity", "transitions")


def assert_served_is_the_gates_pick(rows: dict, gate: GateConfig) -> None:
    """Each model row's ``served`` is the real gate's decision on the validation metrics, and its
    test figures are the winner's own."""
    for variant in (m for m in rows if m not in BASELINES):
        row = rows[variant]
        decision = choose_champion(
            row["validation"], None, {b: rows[b]["validation"] for b in BASELINES}, gate
        )
        served = row["served"]
        assert served["winner"] in ("candidate", *BASELINES)
        assert (served["winner"], served["reason"]) == (decision.winner, decision.reason)
        winner = row if served["winner"] == "candidate" else rows[served["winner"]]
        assert served["test"]["ndcg_at_10"] == winner["test"]["ndcg_at_10"]


def test_quality_report_has_baselines_variants_and_targets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # log to this test's home
    data = write_dataset(simulate(seed=11, n_users=80, n_items=90), tmp_path / "demo")
    config = load_config(overrides={"encoder": TINY_ENCODER, **TINY_MODEL})
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
    assert {*BASELINES, "text+id", "id", "text+id-no-mlm"} == set(rows)
    for row in rows.values():
        assert 0.0 <= row["test"]["ndcg_at_10"] <= 1.0
        assert 0.0 <= row["validation"]["ndcg_at_10"] <= 1.0
    # A seeded sequential simulator: the trained model must clear popularity by a wide margin.
    assert rows["text+id"]["test"]["ndcg_at_10"] > 2 * rows["popularity"]["test"]["ndcg_at_10"]
    # Recent popularity under leave-one-out: its default window (the last 10 % of the period it
    # is fitted on), fitted on the training events for validation and with them for the test.
    prepared = prepare_dataset("demo", data, config, tmp_path / "cache", variants=("id",))
    split, item_ids = prepared.split, prepared.item_ids
    for part, train, cases in (
        ("validation", split.train, split.validation),
        ("test", split.train_full, split.test),
    ):
        by_hand = evaluate_scorer(
            RecentPopularity(train, item_ids), cases, item_ids, config.eval.ks
        )
        assert rows["recent_popularity"][part]["ndcg_at_10"] == pytest.approx(by_hand["ndcg_at_10"])
    assert_served_is_the_gates_pick(rows, config.gate)

    targets = entry["targets"]
    best = max(rows[b]["test"]["ndcg_at_10"] for b in BASELINES)
    assert targets["best_baseline_ndcg_at_10"] == best
    model = rows["text+id"]["test"]["ndcg_at_10"]
    assert targets["beats_1_2x_baseline"] == (model >= 1.2 * best)
    assert targets["text_id_at_least_id"] == (model >= rows["id"]["test"]["ndcg_at_10"])
    served = rows["text+id"]["served"]["test"]["ndcg_at_10"]
    assert targets["served_vs_best_baseline"] == pytest.approx(served / best)
    assert targets["served_1_05x"] == (served >= 1.05 * best)

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
    assert "## demo" in report and "| transitions |" in report
    assert (
        f"| recent_popularity | {rows['recent_popularity']['test']['ndcg_at_10']:.4f} |" in report
    )
    assert "| model | NDCG@10 | served NDCG@10 | served / best baseline |" in report
    winner = rows["text+id"]["served"]["winner"]
    cell = f"{served:.4f}" + ("" if winner == "candidate" else f" ({winner})")
    assert f"| text+id | {model:.4f} | {cell} | {served / best:.2f}x |" in report
    assert "Served in text+ID's place" in report and "(target 1.05x: " in report
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
    assert run.data.metrics["demo/text_id/served_ndcg_at_10"] == pytest.approx(served)
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


def test_temporal_protocol_scores_the_last_window_beside_recent_popularity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = write_dataset(simulate(seed=11, n_users=80, n_items=90), tmp_path / "demo")
    config = load_config(overrides=TINY_MODEL)
    results = run_quality(
        {"demo": data},
        config,
        tmp_path / "out",
        variants=("text+id-no-mlm", "id"),  # no MLM run: the split is under test here
        cache_dir=tmp_path / "cache",
        log_mlflow=True,
        home=tmp_path / "home",
        protocol="temporal",
        windows=3,
        targets="all",
    )
    interactions = read_dataset(data).interactions
    parts = split_windows(interactions, 4, config.replay.base_fraction)  # base + 3 windows
    expected = temporal_split(interactions, 3, config.replay.base_fraction, "all")[-1]
    entry = results["datasets"]["demo"]
    assert entry["n_test_cases"] == len(expected.test) > 0
    assert entry["split"]["train_full_events"] == sum(len(p) for p in parts[:3])
    assert entry["split"]["train_events"] == sum(len(p) for p in parts[:2])

    rows = entry["rows"]
    assert {*BASELINES, "text+id-no-mlm", "id"} == set(rows)
    assert_served_is_the_gates_pick(rows, config.gate)
    # Recent popularity is fitted on every event before the test window and counts the last
    # window of those, the validation window.
    span = int(parts[2]["timestamp"].max() - parts[2]["timestamp"].min())
    item_ids = prepare_dataset(
        "demo", data, config, tmp_path / "cache", variants=("id",), protocol="temporal", windows=3
    ).item_ids
    recent = RecentPopularity(expected.train_full, item_ids, window_seconds=span)
    by_hand = evaluate_scorer(recent, expected.test, item_ids, config.eval.ks)
    assert rows["recent_popularity"]["test"]["ndcg_at_10"] == pytest.approx(by_hand["ndcg_at_10"])

    targets = entry["targets"]
    best = max(
        rows[b]["test"]["ndcg_at_10"] for b in ("popularity", "recent_popularity", "transitions")
    )
    assert targets["best_baseline_ndcg_at_10"] == best
    assert "text+id" not in rows and "beats_every_baseline" not in targets

    out = tmp_path / "out"
    report = (out / "quality-temporal.md").read_text(encoding="utf-8")
    assert report.startswith("# Model quality (temporal, the last of 3 windows)")
    assert "| recent_popularity |" in report
    saved = json.loads((out / "quality-temporal.json").read_text())
    assert saved["protocol"] == "temporal" and saved["windows"] == 3
    assert not (out / "quality.md").exists()  # the leave-one-out report is left alone
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("recloop-benchmarks").experiment_id])
    assert run.info.run_name == "quality-temporal"
    assert run.data.params["protocol"] == "temporal" and run.data.params["targets"] == "all"

    with pytest.raises(ValueError, match="unknown protocol"):
        run_quality({"demo": data}, config, out, variants=("id",), protocol="random")


def test_temporal_target_is_above_every_baseline() -> None:
    def row(ndcg: float) -> dict:
        return {"test": {"ndcg_at_10": ndcg}, "train_seconds": 1.0}

    rows = {
        "popularity": row(0.02),
        "recent_popularity": row(0.05),
        "transitions": row(0.04),
        "text+id": row(0.055),
        "id": row(0.05),
    }
    targets = bench_quality._targets(rows, "temporal")
    assert targets["best_baseline"] == "recent_popularity"
    assert targets["ratio_to_best_baseline"] == pytest.approx(1.1)
    assert targets["beats_every_baseline"] and targets["text_id_at_least_id"]
    assert "served_vs_best_baseline" not in targets  # no served figures, no served target
    rows["text+id"] = row(0.05)  # a tie with the best baseline is not above it
    assert not bench_quality._targets(rows, "temporal")["beats_every_baseline"]
    # Under leave-one-out the bar is 1.2x the best baseline, recent popularity included.
    rows["text+id"] = row(0.06)
    loo = bench_quality._targets(rows)
    assert loo["best_baseline"] == "recent_popularity" and loo["beats_1_2x_baseline"]
    rows["recent_popularity"] = row(0.051)
    assert not bench_quality._targets(rows)["beats_1_2x_baseline"]
    # What serves in text+ID's place is judged against the best baseline too, from 1.05x.
    rows["text+id"]["served"] = {"winner": "transitions", "test": {"ndcg_at_10": 0.04}}
    served = bench_quality._targets(rows)
    assert served["served_vs_best_baseline"] == pytest.approx(0.04 / 0.051)
    assert not served["served_1_05x"]
    rows["text+id"]["served"] = {"winner": "candidate", "test": {"ndcg_at_10": 0.06}}
    assert bench_quality._targets(rows)["served_1_05x"]


def test_served_is_the_baseline_the_gate_picks_on_validation() -> None:
    def metrics(validation: float, test: float) -> dict:
        return {
            "validation": {"ndcg_at_10": validation, "recall_at_10": validation},
            "test": {"ndcg_at_10": test, "recall_at_10": test},
        }

    baselines = {
        "popularity": metrics(0.02, 0.02),
        "recent_popularity": metrics(0.05, 0.03),
        "transitions": metrics(0.04, 0.045),
    }
    gate = GateConfig()
    # Below recent popularity on validation: recent popularity serves, with its own test figures,
    # although the model would have been better on the test cases.
    served = bench_quality.served_model(metrics(0.045, 0.09), baselines, gate)
    assert served["winner"] == "recent_popularity"
    assert served["test"] == baselines["recent_popularity"]["test"]
    assert served["reason"].startswith("serve recent popularity")
    # A tie with the best baseline on validation does not serve the model either.
    assert bench_quality.served_model(metrics(0.05, 0.09), baselines, gate)["winner"] == (
        "recent_popularity"
    )
    served = bench_quality.served_model(metrics(0.06, 0.01), baselines, gate)
    assert served["winner"] == "candidate" and served["test"]["ndcg_at_10"] == 0.01

    # The report names the baseline that serves and the served / best-baseline ratio.
    rows = {**baselines, "text+id": metrics(0.045, 0.09)}
    rows["text+id"]["served"] = bench_quality.served_model(rows["text+id"], baselines, gate)
    rows["text+id"]["train_seconds"] = 1.0
    results = {
        "protocol": "loo",
        "machine": "test",
        "seed": 42,
        "seeds": [42],
        "datasets": {
            "demo": {
                "summary": {"users": 3, "items": 4, "interactions": 5},
                "n_test_cases": 3,
                "mlm": None,
                "rows": rows,
                "targets": bench_quality._targets(rows),
            }
        },
    }
    report = bench_quality.to_markdown(results)
    assert "| text+id | 0.0900 | 0.0300 (recent_popularity) | 0.67x |" in report
    assert "| recent_popularity | 0.0300 |" in report
    assert (
        "Served in text+ID's place (recent_popularity) / best baseline (transitions): 0.67x "
        "(target 1.05x: NOT met)."
    ) in report


def test_several_seeds_report_each_seed_and_judge_the_targets_on_their_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = write_dataset(simulate(seed=11, n_users=60, n_items=50), tmp_path / "demo")
    config = load_config(overrides={"encoder": TINY_ENCODER, **TINY_MODEL})
    results = run_quality(
        {"demo": data},
        config,
        tmp_path / "out",
        variants=("text+id", "id"),
        cache_dir=tmp_path / "cache",
        encoder_dir=tmp_path / "encoders",
        log_mlflow=True,
        home=tmp_path / "home",
        seeds=(3, 4),
    )
    assert results["seeds"] == [3, 4] and results["seed"] == 3
    entry = results["datasets"]["demo"]
    runs = entry["per_seed"]
    assert set(runs) == {"3", "4"}
    # The seed drives the MLM pretraining (one encoder per seed) and the model's training.
    for seed in ("3", "4"):
        assert (tmp_path / "encoders" / f"seed-{seed}" / "demo" / encoder.REPORT_FILE).exists()
    assert runs["3"]["mlm"]["perplexity_after"] != runs["4"]["mlm"]["perplexity_after"]
    ndcgs = [runs[seed]["rows"]["text+id"]["test"]["ndcg_at_10"] for seed in ("3", "4")]
    assert ndcgs[0] != ndcgs[1]

    rows = entry["rows"]
    row = rows["text+id"]
    assert row["per_seed"] == {"3": ndcgs[0], "4": ndcgs[1]}
    assert row["test"]["ndcg_at_10"] == pytest.approx(np.mean(ndcgs))
    assert row["test_std"]["ndcg_at_10"] == pytest.approx(np.std(ndcgs))
    recalls = [runs[seed]["rows"]["text+id"]["validation"]["recall_at_10"] for seed in ("3", "4")]
    assert row["validation"]["recall_at_10"] == pytest.approx(np.mean(recalls))
    seconds = [runs[seed]["rows"]["text+id"]["train_seconds"] for seed in ("3", "4")]
    assert row["train_seconds_max"] == max(seconds)
    # Baselines do not depend on the seed: one row each, no per-seed figures.
    assert "per_seed" not in rows["transitions"] and "recent_popularity" in rows
    # What is served is decided per seed (the gate on that seed's validation figures) and
    # reported as the mean over the seeds.
    for seed in ("3", "4"):
        assert_served_is_the_gates_pick(
            runs[seed]["rows"] | {b: rows[b] for b in BASELINES}, config.gate
        )
    per_seed = [runs[seed]["rows"]["text+id"]["served"] for seed in ("3", "4")]
    assert row["served"]["test"]["ndcg_at_10"] == pytest.approx(
        np.mean([s["test"]["ndcg_at_10"] for s in per_seed])
    )
    assert row["served"]["winners"] == {"3": per_seed[0]["winner"], "4": per_seed[1]["winner"]}
    assert row["served"]["baseline_seeds"] == sum(s["winner"] != "candidate" for s in per_seed)
    targets = entry["targets"]
    assert targets["ratio_to_best_baseline"] == pytest.approx(
        np.mean(ndcgs) / targets["best_baseline_ndcg_at_10"]
    )
    assert targets["text_id_at_least_id"] == (np.mean(ndcgs) >= rows["id"]["test"]["ndcg_at_10"])

    # A seed's figures are those of a run with that seed alone: the seeds do not share state.
    alone = run_quality(
        {"demo": data},
        config,
        tmp_path / "alone",
        variants=("text+id",),
        cache_dir=tmp_path / "cache",
        seeds=(4,),
    )["datasets"]["demo"]
    assert "per_seed" not in alone and "per_seed" not in alone["rows"]["text+id"]
    assert alone["rows"]["text+id"]["test"]["ndcg_at_10"] == ndcgs[1]
    assert alone["mlm"]["perplexity_after"] == runs["4"]["mlm"]["perplexity_after"]

    report = (tmp_path / "out" / "quality.md").read_text(encoding="utf-8")
    assert "Seeds 3, 4" in report and "Test NDCG@10 per seed:" in report
    assert f"| text+id | {ndcgs[0]:.4f} | {ndcgs[1]:.4f} | {np.mean(ndcgs):.4f} |" in report
    assert "| text+id served | " in report and "| recent_popularity | " in report
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("recloop-benchmarks").experiment_id])
    assert run.data.params["seeds"] == "3,4"
    assert run.data.metrics["demo/text_id/seed_4/ndcg_at_10"] == pytest.approx(ndcgs[1])
    assert run.data.metrics["demo/text_id/ndcg_at_10"] == pytest.approx(np.mean(ndcgs))

    with pytest.raises(ValueError, match="seeds must differ"):
        run_quality({"demo": data}, config, tmp_path / "out", variants=("id",), seeds=(3, 3))
