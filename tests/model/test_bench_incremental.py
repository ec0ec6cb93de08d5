"""``recloop bench incremental`` end to end on a tiny simulated shop, and on real data (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

import benchmarks.incremental as bench_incremental
from benchmarks.incremental import (
    BASELINES,
    LEARNED,
    MODELS,
    NO_UPDATE,
    ROWS,
    SERVED,
    build_timeline,
    next_window_metrics,
    run_incremental,
    score_cases,
)
from recloop import fitting
from recloop.baselines import ItemTransitions, Popularity, RecentPopularity
from recloop.config import load_config
from recloop.data import holdout_last_events, read_dataset, write_dataset
from recloop.demo import simulate
from recloop.evaluation import RankingCases
from recloop.gate import choose_champion

pytestmark = pytest.mark.model

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

TINY = {
    "model": {"hidden_size": 16, "num_layers": 1, "max_seq_len": 20},
    "train": {"epochs": 4, "patience": 2, "finetune_epochs": 2},
    "encoder": {"enabled": False},
}


@pytest.fixture(scope="module")
def trained() -> dict[int, Any]:
    """Every model the module's run trained, by ``id`` of the figures dict it came with (the
    dict the results hold), so a test can score a model the results only name; and each served
    line candidate after it learned its held-out events, by ``id`` of the ``learned_judged``
    dict its figures hold."""
    return {}


@pytest.fixture(scope="module")
def bench(
    tmp_path_factory: pytest.TempPathFactory, trained: dict[int, Any]
) -> tuple[dict, Path, Path]:
    """One run for the module: 80 users, 150 items released over time, 2 updates."""
    root = tmp_path_factory.mktemp("bench-incremental")
    # Seed 5 at this size releases new items in both update windows (14 and 10 items).
    data = write_dataset(simulate(seed=5, n_users=80, n_items=150), root / "shop")
    home = root / "home"
    # A module fixture runs before the per-test autouse one that clears MLFLOW_TRACKING_URI, and
    # mlflow.set_tracking_uri in an earlier test exports it: clear it here too, or the run would
    # be logged to that test's store.
    fit_arm = bench_incremental.fit_arm
    learn_judged = fitting.learn_judged

    def recording_fit_arm(*args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        result, figures = fit_arm(*args, **kwargs)
        trained[id(figures)] = result.recommender
        return result, figures

    def recording_learn_judged(*args: Any, **kwargs: Any) -> Any:
        result = learn_judged(*args, **kwargs)
        trained[id(result.report["learned_judged"])] = result.recommender
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setattr(bench_incremental, "fit_arm", recording_fit_arm)
        patch.setattr(fitting, "learn_judged", recording_learn_judged)
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
        assert set(step["rows"]) == {NO_UPDATE, *MODELS, SERVED, LEARNED, *BASELINES} == set(ROWS)
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


def test_served_line_names_who_serves_after_each_gate(bench) -> None:
    """The product's rules, window by window: the gate's winner decides what serves and what
    the next candidate starts from; a kept champion leaves its windows pending."""
    results, _, _ = bench
    kind, model, learned_through = "learned", "initial", 0  # M0 is the first champion
    for step in results["steps"]:
        w, gate = step["window"], step["served"]
        assert gate["winner"] in {"candidate", "champion", *BASELINES}
        assert gate["champion_before"] == model
        assert gate["windows_learned"] == list(range(learned_through + 1, w + 1))
        # A learned champion is the candidate's parent; while a baseline serves, the newest
        # candidate (the one of the update before) is.
        assert gate["parent"] == (model if kind == "learned" else f"learned {w - 1}")
        if gate["winner"] == "candidate":
            expected, verdict = ("learned", f"learned {w}"), "promote:"
        elif gate["winner"] == "champion":
            expected, verdict = (kind, model), "keep champion:"
        else:
            winner = gate["winner"]
            expected, verdict = (f"baseline:{winner}", f"{winner} {w}"), "serve "
        assert (gate["kind"], gate["model"]) == expected
        assert gate["reason"].startswith(verdict)
        assert set(gate["scores"]) == {"candidate", "champion", *BASELINES}
        assert gate["heldout_cases"] > 0 and gate["metric"] == "ndcg_at_10"
        learned = step["rows"][LEARNED]["training"]
        assert learned["warm_start"] and "minus held-out" in learned["trained_on"]
        assert learned["recency_weight"] is not None
        if gate["winner"] != "champion":
            learned_through = w
        kind, model = gate["kind"], gate["model"]


def _baselines(events: pd.DataFrame, item_ids: list[str], span: int) -> dict[str, Any]:
    return {
        "popularity": Popularity(events, item_ids),
        "recent_popularity": RecentPopularity(events, item_ids, window_seconds=span),
        "transitions": ItemTransitions(events, item_ids),
    }


def test_served_line_replays_the_gate_and_tests_the_model_it_names(bench, trained) -> None:
    """Rebuilt here from the data: the held-out split, the baselines, every score the gate used
    and its decision; then the served and learned rows' next-window numbers are recomputed from
    the models their names point to (a trained model, or a baseline refitted here)."""
    results, _, _ = bench
    config = load_config(overrides=TINY)
    timeline = build_timeline(
        read_dataset(results["data"]),
        results["windows"],
        config.replay.base_fraction,
        results["case_targets"],
    )
    models = {"initial": trained[id(results["initial"]["training"])]}
    for step in results["steps"]:
        w, gate = step["window"], step["served"]
        first = gate["windows_learned"][0]
        pending = pd.concat(timeline.parts[first : w + 1], ignore_index=True)
        train, heldout = holdout_last_events(timeline.train(first - 1), pending)
        item_ids = timeline.catalogue(w)
        window = timeline.parts[w]["timestamp"]
        span = int(window.max() - window.min())
        baselines = _baselines(train, item_ids, span)
        training = step["rows"][LEARNED]["training"]
        judged = trained[id(training)]
        # Once judged, the candidate learned the held-out events and the baselines count them.
        everything = pd.concat([timeline.train(first - 1), pending], ignore_index=True)
        models[f"learned {w}"] = trained[id(training["learned_judged"])]
        assert models[f"learned {w}"].popularity.sum() == len(everything)
        assert judged.popularity.sum() == len(train)
        refitted = _baselines(everything, item_ids, span)
        models |= {f"{name} {w}": baseline for name, baseline in refitted.items()}

        cases = RankingCases.build(heldout.sample(config.eval.max_users, config.seed), item_ids)
        assert gate["heldout_cases"] == len(cases)
        scorers = {"candidate": judged, "champion": models[gate["champion_before"]], **baselines}
        scored = {name: score_cases(m, cases, item_ids, config) for name, m in scorers.items()}
        assert gate["scores"] == pytest.approx({n: m["ndcg_at_10"] for n, m in scored.items()})
        decision = choose_champion(
            scored["candidate"], scored["champion"], {b: scored[b] for b in BASELINES}, config.gate
        )
        assert (decision.winner, decision.reason) == (gate["winner"], gate["reason"])

        next_cases = RankingCases.build(
            timeline.next_cases(w).sample(config.eval.max_users, config.seed), item_ids
        )
        for row, name in ((SERVED, gate["model"]), (LEARNED, f"learned {w}")):
            expected = next_window_metrics(
                models[name], next_cases, item_ids, timeline.new_items(w), config
            )
            got = step["rows"][row]["next"]
            for key in ("ndcg_at_10", "recall_at_10", "ndcg_at_20", "new_item_share_at_10"):
                assert got[key] == pytest.approx(expected[key]), (w, row, name, key)
        # The served line's candidate is its own model, not the incremental arm's.
        assert models[f"learned {w}"] is not trained[id(step["rows"]["incremental"]["training"])]


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
    # The served target: per window, what serves against that window's best baseline.
    served = [
        s["rows"][SERVED]["next"]["ndcg_at_10"]
        / max(s["rows"][b]["next"]["ndcg_at_10"] for b in BASELINES)
        for s in steps
    ]
    assert targets["served_vs_best_baseline_windows"] == pytest.approx(served)
    assert targets["served_vs_best_baseline"] == pytest.approx(sum(served) / 2)
    assert targets["served_windows_at_target"] == sum(r >= 1.05 for r in served)
    assert targets["served_met"] == all(r >= 1.05 for r in served)
    for row in (SERVED, LEARNED):
        assert results["mean"][row]["ndcg_at_10"] == pytest.approx(
            sum(s["rows"][row]["next"]["ndcg_at_10"] for s in steps) / 2
        )


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
    assert "| gap (shrink) | prior w | recency w |" in report  # the training table
    for step in results["steps"]:
        w, gate = step["window"], step["served"]
        assert f"| {w} | served ({gate['kind']}) | " in report
        assert f"| {w} | learned alone | " in report
        assert f"| {gate['winner']} | {gate['model']} ({gate['kind']}) | {gate['reason']} |" in (
            report
        )
    assert "## Gate (served line)" in report
    served_line = next(x for x in report.splitlines() if "of what serves against" in x)
    assert ("every update: NOT met" in served_line) != results["targets"]["served_met"]
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
    for row in (SERVED, LEARNED):
        history = client.get_metric_history(run.info.run_id, f"{row}_ndcg_at_10")
        assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
            (s["window"], pytest.approx(s["rows"][row]["next"]["ndcg_at_10"]))
            for s in results["steps"]
        ]
    metrics = run.data.metrics
    assert metrics["served_vs_best_baseline"] == pytest.approx(
        results["targets"]["served_vs_best_baseline"]
    )
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
