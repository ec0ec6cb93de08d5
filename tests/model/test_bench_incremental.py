"""``recloop bench incremental`` end to end on a tiny simulated shop, and on real data (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.incremental import BASELINES, MODELS, NO_UPDATE, ROWS, run_incremental
from recloop.config import load_config
from recloop.data import write_dataset
from recloop.demo import simulate

pytestmark = pytest.mark.model

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

TINY = {
    "model": {"hidden_size": 16, "num_layers": 1, "max_seq_len": 20},
    "train": {"epochs": 4, "patience": 2, "finetune_epochs": 2},
    "encoder": {"enabled": False},
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    """One run for the module: 80 users, 150 items released over time, 2 updates."""
    root = tmp_path_factory.mktemp("bench-incremental")
    # Seed 5 at this size releases new items in both update windows (14 and 10 items).
    data = write_dataset(simulate(seed=5, n_users=80, n_items=150), root / "shop")
    home = root / "home"
    # A module fixture runs before the per-test autouse one that clears MLFLOW_TRACKING_URI, and
    # mlflow.set_tracking_uri in an earlier test exports it: clear it here too, or the run would
    # be logged to that test's store.
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        results = run_incremental(
            data,
            load_config(overrides=TINY),
            root / "out",
            windows=2,
            cache_dir=root / "cache",
            home=home,
        )
    return results, root / "out", home


def test_one_row_per_window_for_every_model_and_baseline(bench) -> None:
    results, _, _ = bench
    steps = results["steps"]
    assert [s["window"] for s in steps] == [1, 2]
    for step in steps:
        assert set(step["rows"]) == {NO_UPDATE, *MODELS, *BASELINES} == set(ROWS)
        for name in ROWS:
            nxt = step["rows"][name]["next"]
            assert 0.0 <= nxt["ndcg_at_10"] <= nxt["recall_at_10"] <= nxt["recall_at_20"] <= 1
            assert nxt["n_cases"] > 0 and 0.0 <= nxt["new_item_share_at_10"] <= 1.0
    # A sequential simulator: both trained arms clear popularity by far, on average.
    mean = results["mean"]
    for name in MODELS:
        assert mean[name]["ndcg_at_10"] > 2 * mean["popularity"]["ndcg_at_10"]


def test_incremental_is_warm_started_and_grows_its_item_table(bench) -> None:
    results, _, _ = bench
    initial = results["initial"]["training"]
    (one, two) = (s["rows"] for s in results["steps"])
    new_1, new_2 = (s["new_items"] for s in results["steps"])
    assert new_1 > 0 and new_2 > 0  # the data set was chosen for this
    assert one["incremental"]["training"]["n_items"] == initial["n_items"] + new_1
    assert (
        two["incremental"]["training"]["n_items"]
        == one["incremental"]["training"]["n_items"] + new_2
    )
    for rows in (one, two):
        inc, full = rows["incremental"]["training"], rows["full"]["training"]
        assert inc["warm_start"] and not full["warm_start"]
        assert inc["n_new_items"] > 0 and full["n_new_items"] == full["n_items"]
        assert inc["n_items"] == full["n_items"]  # both arms know the same catalogue
        # validate_first scored the parent before the update: a warm start, not a fresh model.
        assert inc["val_ndcg_before"] is not None and full["val_ndcg_before"] is None
        assert inc["epochs"] <= TINY["train"]["finetune_epochs"]
        # each arm chose its transition prior's weight among the configured ones
        for arm in (inc, full):
            assert arm["prior_weight"] in load_config().model.prior_weights


def test_targets_follow_the_numbers(bench) -> None:
    results, _, _ = bench
    targets, steps = results["targets"], results["steps"]
    last = steps[-1]["rows"]
    ratio = (
        last["incremental"]["training"]["wall_seconds"] / last["full"]["training"]["wall_seconds"]
    )
    assert targets["time_ratio_last"] == pytest.approx(ratio)
    assert targets["time_met"] == (ratio <= 0.1)
    inc = sum(s["rows"]["incremental"]["next"]["ndcg_at_10"] for s in steps) / 2
    full = sum(s["rows"]["full"]["next"]["ndcg_at_10"] for s in steps) / 2
    assert targets["ndcg_ratio_mean"] == pytest.approx(inc / full)
    assert targets["ndcg_met"] == (inc >= 0.98 * full)
    # The temporal quality target: each arm's mean against the best baseline's mean.
    means = {
        b: sum(s["rows"][b]["next"]["ndcg_at_10"] for s in steps) / 2
        for b in ("popularity", "recent_popularity", "transitions")
    }
    best = max(means, key=means.get)
    assert targets["best_baseline"] == best
    for arm, value in (("incremental", inc), ("full", full)):
        assert targets[f"{arm}_vs_best_baseline"] == pytest.approx(value / means[best])
        assert targets[f"{arm}_above_baselines"] == (value > means[best])
        above = sum(
            all(
                s["rows"][arm]["next"]["ndcg_at_10"] > s["rows"][b]["next"]["ndcg_at_10"]
                for b in means
            )
            for s in steps
        )
        assert targets[f"{arm}_windows_above_baselines"] == above


def test_report_files_are_written(bench) -> None:
    results, out, _ = bench
    stem = results["dataset"]
    assert stem == "shop"
    for suffix in (".md", ".json", "-ndcg.png", "-seconds.png"):
        assert (out / f"{stem}{suffix}").stat().st_size > 0
    report = (out / f"{stem}.md").read_text(encoding="utf-8")
    assert "# Incremental updates vs full retrain: shop" in report
    for label in ("incremental", "full retrain", "no update (parent)", "recent popularity"):
        assert f"| 2 | {label} |" in report
    assert "| gap (shrink) | prior w |" in report  # the training table
    time_line = next(line for line in report.splitlines() if "wall time at the last" in line)
    assert ("(target <= 0.1: NOT met)" in time_line) != results["targets"]["time_met"]
    for arm, label in (("incremental", "incremental"), ("full", "full retrain")):
        line = next(
            x
            for x in report.splitlines()
            if x.startswith(f"- Mean next-window NDCG@10 of the {label} ")
        )
        assert ("above every baseline: NOT met" in line) != results["targets"][
            f"{arm}_above_baselines"
        ]
    loaded = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
    assert loaded["steps"][1]["rows"]["incremental"]["next"]["ndcg_at_10"] == pytest.approx(
        results["steps"][1]["rows"]["incremental"]["next"]["ndcg_at_10"]
    )


def test_mlflow_run_holds_metrics_and_report(bench) -> None:
    results, _, home = bench
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("recloop-benchmarks")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == results["mlflow_run_id"]
    assert run.info.run_name == "incremental-shop"
    assert run.data.params["windows"] == "2" and run.data.tags["benchmark"] == "incremental"
    history = client.get_metric_history(run.info.run_id, "incremental_ndcg_at_10")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (s["window"], pytest.approx(s["rows"]["incremental"]["next"]["ndcg_at_10"]))
        for s in results["steps"]
    ]
    metrics = run.data.metrics
    for arm in ("incremental", "full"):
        assert metrics[f"{arm}_vs_best_baseline"] == pytest.approx(
            results["targets"][f"{arm}_vs_best_baseline"]
        )
        assert metrics[f"{arm}_baselines_target_met"] == float(
            results["targets"][f"{arm}_above_baselines"]
        )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"shop.md", "shop.json", "shop-ndcg.png", "shop-seconds.png"}


@pytest.mark.slow
def test_instruments_two_updates(tmp_path: Path) -> None:
    """The real run with the default config (minutes on 2 cores): sane numbers, every row."""
    from benchmarks.quality import import_shared

    if not (SHARED / "amazon-instruments-2014").exists():
        pytest.skip(f"real dataset not found under {SHARED}")
    data = import_shared(SHARED, tmp_path / "data", names=["amazon-instruments-2014"])
    results = run_incremental(
        data["amazon-instruments-2014"],
        load_config(),
        tmp_path / "out",
        windows=2,
        cache_dir=tmp_path / "cache",
        log_mlflow=False,
    )
    assert len(results["steps"]) == 2
    mean = results["mean"]
    for name in MODELS:
        assert mean[name]["ndcg_at_10"] > mean["popularity"]["ndcg_at_10"]
    assert (tmp_path / "out" / "amazon-instruments-2014.md").exists()
