"""Real MLflow on SQLite in tmp_path: register, gate, alias, reload by alias in a fresh process."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from registry_helpers import report, tiny_recommender

from models.pyfunc import RecloopModel, parse_history
from recloop import registry
from recloop.config import Config
from recloop.paths import Home, get_home
from tasks.promote import promote_candidate

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One SQLite store for the module: creating its tables takes ~10 s on 2 cores."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    home = Home(tmp_path_factory.mktemp("registry") / "home")
    yield home, Config()
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def test_register_gate_alias_and_serve_by_alias(env, tmp_path):
    home, config = env
    reg = registry.configure(home, config)
    assert reg.uri == f"sqlite:///{home.mlflow_db}"
    assert reg.champion_version() is None
    assert registry.load_champion(config, home) is None

    first = promote_candidate(
        tiny_recommender(0), report(0.05, None, 0.02), config, home,
        tags={"batch_ids": ["b1"], "data_fingerprint": "abc"},
        extra_metrics={"train_seconds": 1.5},
    )  # fmt: skip
    assert first.promoted and first.champion_version_before is None
    assert reg.champion_version() == first.version == reg.challenger_version()

    # second candidate is worse than the champion: registered, tagged failed, not promoted
    second = promote_candidate(
        tiny_recommender(1), report(0.04, 0.05, 0.02), config, home,
        tags={"batch_ids": ["b2"], "data_fingerprint": "def"},
    )  # fmt: skip
    assert not second.promoted and second.champion_version_before == first.version
    assert reg.champion_version() == first.version
    assert reg.challenger_version() == second.version

    versions = reg.list_versions()
    assert [v["version"] for v in versions] == [first.version, second.version]
    one, two = versions
    assert one["tags"]["gate"] == "passed" and "champion" in one["aliases"]
    assert two["tags"]["gate"] == "failed" and two["aliases"] == ["challenger"]
    assert "<= champion 0.0500" in two["tags"]["reason"]
    assert two["tags"]["parent_version"] == first.version
    assert json.loads(two["tags"]["batch_ids"]) == ["b2"]
    assert two["tags"]["data_fingerprint"] == "def"
    assert json.loads(two["tags"]["metrics"])["ndcg_at_10"] == pytest.approx(0.04)

    run = reg.client.get_run(first.run_id)
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(0.05)
    assert run.data.metrics["popularity_ndcg_at_10"] == pytest.approx(0.02)
    assert run.data.metrics["train_seconds"] == pytest.approx(1.5)
    assert run.data.params["model.hidden_size"] == str(config.model.hidden_size)
    # Opened and closed by promote_candidate: named from its tags, the gate in its description.
    assert run.info.run_name == f"v{first.version} candidate batch b1"
    assert run.info.status == "FINISHED"
    assert "Gate passed" in run.data.tags["mlflow.note.content"]
    second_run = reg.client.get_run(second.run_id)
    assert two["tags"]["reason"] in second_run.data.tags["mlflow.note.content"]
    assert "Gate failed" in second_run.data.tags["mlflow.note.content"]
    artifacts = {a.path for a in reg.client.list_artifacts(first.run_id, "evaluation")}
    assert artifacts == {
        "evaluation/report.json",
        "evaluation/report.md",
        "evaluation/ndcg_at_10_by_version.png",
    }
    assert str(home.mlartifacts) in reg.client.get_experiment(reg.experiment_id).artifact_location

    # load_champion rebuilds from the registry's artifacts: same scores as the logged model
    loaded, info = registry.load_champion(config, home)
    assert info["version"] == first.version
    histories = [["i1", "i2"], []]
    np.testing.assert_allclose(loaded.score(histories), tiny_recommender(0).score(histories))

    # a fresh interpreter in another directory, knowing only the tracking URI
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        """
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/recloop@champion")
        df = pd.DataFrame({"user_id": ["u1", "u2", "u3"],
                           "history": [["i1", "i2"], [], ["unknown", "i3"]]})
        out = model.predict(df, params={"k": 3})
        keep = model.predict(df.head(1), params={"k": 12, "exclude_seen": False})
        print(json.dumps({"columns": list(out.columns), "rows": out.to_dict("records"),
                          "keep": keep["item_ids"][0]}, default=list))
        """
    )
    child_env = {**os.environ, "MLFLOW_TRACKING_URI": reg.uri}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=child_env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["columns"] == ["user_id", "item_ids", "scores"]
    rows = result["rows"]
    assert [r["user_id"] for r in rows] == ["u1", "u2", "u3"]
    for r in rows:
        assert len(r["item_ids"]) == 3 and len(r["scores"]) == 3
        assert all(isinstance(i, str) for i in r["item_ids"])
        assert r["scores"] == sorted(r["scores"], reverse=True)
    assert not {"i1", "i2"} & set(rows[0]["item_ids"])  # history excluded by default
    assert "i3" not in rows[2]["item_ids"]  # unknown id ignored, known one excluded
    assert rows[1]["item_ids"] == ["i0", "i1", "i2"]  # empty history: popularity fallback
    assert {"i1", "i2"} <= set(result["keep"])  # exclude_seen False keeps them
    expected, _ = tiny_recommender(0).recommend([["i1", "i2"]], k=3)
    assert rows[0]["item_ids"] == expected[0]
    assert not (elsewhere / "mlflow.db").exists()  # it used the given URI, not the cwd


def test_set_champion_rolls_back(env):
    home, config = env
    # its own registered model in the same store, so the tests do not depend on each other
    config = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, model_name="rb")
    )
    reg = registry.configure(home, config)
    a = reg.log_candidate(tiny_recommender(0), report(0.05, None, 0.02), tags={})
    b = reg.log_candidate(tiny_recommender(1), report(0.06, None, 0.02), tags={})
    assert reg.challenger_version() == b.version and reg.champion_version() is None
    reg.set_champion(b.version, "manual")
    reg.set_champion(a.version, "rollback: b misbehaved")
    assert reg.champion_version() == a.version
    assert reg.version_info(a.version)["tags"]["champion_reason"] == "rollback: b misbehaved"
    # configure twice reuses the experiment
    assert registry.configure(home, config).experiment_id == reg.experiment_id


def test_a_retried_promotion_reuses_the_version_it_registered(env, tmp_path):
    """A retry after a partial failure (registered, champion alias not yet moved) must finish
    that version, not register the same candidate again."""
    home, config = env
    config = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, model_name="retry")
    )
    reg = registry.configure(home, config)
    # The first attempt got as far as registering, then died before the gate moved champion.
    partial = reg.log_candidate(
        tiny_recommender(0), report(0.05, None, 0.02), tags={"batch_ids": "b1"}, key="attempt-1"
    )
    assert reg.champion_version() is None
    retried = promote_candidate(
        tiny_recommender(0), report(0.05, None, 0.02), config, home,
        tags={"batch_ids": "b1"}, candidate_key="attempt-1",
    )  # fmt: skip
    assert retried.version == partial.version and retried.run_id == partial.run_id
    assert retried.promoted and reg.champion_version() == partial.version
    assert reg.version_info(partial.version)["tags"]["gate"] == "passed"
    # Once more (the promotion went through but the task still failed): same version, and the
    # champion "before" is still the one before the first attempt.
    again = promote_candidate(
        tiny_recommender(0), report(0.05, None, 0.02), config, home,
        tags={"batch_ids": "b1"}, candidate_key="attempt-1",
    )  # fmt: skip
    assert again.version == partial.version and again.champion_version_before is None
    # Another attempt is another candidate.
    other = promote_candidate(
        tiny_recommender(1), report(0.04, 0.05, 0.02), config, home,
        tags={"batch_ids": "b2"}, candidate_key="attempt-2",
    )  # fmt: skip
    assert other.version != partial.version and not other.promoted
    assert [v["version"] for v in reg.list_versions()] == [partial.version, other.version]
    assert other.run_url == (  # in the UI's "Model training" view, not its GenAI one
        f"http://127.0.0.1:5000/#/experiments/{reg.experiment_id}/runs/{other.run_id}"
        "?workflowType=machine_learning"
    )
    assert reg.experiment_url().endswith("/runs?workflowType=machine_learning")

    # The per-version plot of the second run covers both versions, candidate vs champion vs
    # baselines: the numbers it was drawn from are the runs' metrics.
    history = reg.version_history("ndcg_at_10")
    assert [row["version"] for row in history] == [partial.version, other.version]
    assert [row["gate"] for row in history] == ["passed", "failed"]
    assert history[0]["candidate"] == pytest.approx(0.05) and history[0]["champion"] is None
    assert history[1]["champion"] == pytest.approx(0.05)
    assert history[1]["popularity"] == pytest.approx(0.02)
    png = reg.client.download_artifacts(
        other.run_id, "evaluation/ndcg_at_10_by_version.png", str(tmp_path)
    )
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pyfunc_accepts_every_history_transport():
    model = RecloopModel()
    model.recommender = tiny_recommender(0)
    df = pd.DataFrame(
        {
            "user_id": [1, "u2", "u3", "u4"],
            "history": [["i1"], np.array(["i1"]), '["i1"]', None],
        }
    )
    out = model.predict(None, df, params={"k": 2, "exclude_seen": "false"})
    assert list(out.columns) == ["user_id", "item_ids", "scores"]
    assert out["user_id"].tolist() == ["1", "u2", "u3", "u4"]
    assert out["item_ids"][0] == out["item_ids"][1] == out["item_ids"][2]
    assert out["item_ids"][3] == ["i0", "i1"]  # no history: popularity
    assert parse_history("i7") == ["i7"] and parse_history(float("nan")) == []
    with pytest.raises(TypeError):
        parse_history(3)


def test_a_second_home_in_the_same_process_gets_its_own_store(tmp_path: Path) -> None:
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI; it must not leak into the next home."""
    first, second = get_home(tmp_path / "a"), get_home(tmp_path / "b")
    registry.configure(first, Config())
    assert registry.tracking_uri(second) == f"sqlite:///{second.mlflow_db}"


def test_a_candidate_run_spans_training_and_shows_what_it_is(env, tmp_path):
    """The run a cycle opens before training: classic-ML experiment, a name with version, kind
    and batch, a duration that covers training, a learning curve, metric columns, the gate in its
    description, the training data as a dataset input; a retried promotion reuses it."""
    home, config = env
    config = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, model_name="spans")
    )
    reg = registry.configure(home, config)
    experiment = reg.client.get_experiment(reg.experiment_id)
    assert (
        experiment.tags[registry.EXPERIMENT_KIND]
        == registry.CLASSIC_ML
        == ("custom_model_development")
    )
    interactions = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "item_id": ["i1", "i2", "i3"], "timestamp": [1, 2, 3]}
    )
    history = [
        {"epoch": 0, "train_loss": None, "val": 0.01, "steps": 0},
        {"epoch": 1, "train_loss": 2.5, "val": 0.03, "steps": 4},
        {"epoch": 2, "train_loss": 2.1, "val": 0.04, "steps": 8},
    ]
    tags = {"training": "incremental", "batch_ids": "ac1eb9e2deadbeef", "data_fingerprint": "f1"}
    with reg.candidate_run("from-scratch", ["ac1eb9e2deadbeef"], tags) as run:
        assert reg.client.get_run(run.run_id).info.run_name == "from-scratch batch ac1eb9e2"
        run.log_training_data(interactions, "f1", home.archive)
        time.sleep(0.2)  # "training"
        trained_ms = time.time() * 1000
        run.rename("incremental")
        assert run.log_learning_curve(history) == 5
        run.log_metrics({"train_seconds": 0.2, "best_epoch": None})
        promoted = promote_candidate(
            tiny_recommender(0), report(0.05, 0.04, 0.02), config, home, tags,
            run_id=run.run_id, candidate_key="task-1",
        )  # fmt: skip
        # Prefect retries the task after a partial failure: same run, same version.
        again = promote_candidate(
            tiny_recommender(0), report(0.05, 0.04, 0.02), config, home, tags,
            run_id=run.run_id, candidate_key="task-1",
        )  # fmt: skip
        assert (again.version, again.run_id) == (promoted.version, run.run_id)
        assert again.champion_version_before is None
        run.log_text("# cycle\n\nDecision: promoted\n", "report.md")
        assert reg.client.get_run(run.run_id).info.status == "RUNNING"
    assert promoted.run_id == run.run_id and promoted.promoted
    assert [v["version"] for v in reg.list_versions()] == ["1"]
    assert reg.version_info("1")["tags"]["gate"] == "passed"
    assert len(reg.client.search_runs([reg.experiment_id], "tags.data_fingerprint = 'f1'")) == 1

    done = reg.client.get_run(run.run_id)
    assert done.info.run_name == "v1 incremental batch ac1eb9e2"
    assert done.data.tags["mlflow.runName"] == done.info.run_name
    assert done.info.status == "FINISHED"
    assert done.info.start_time <= trained_ms <= done.info.end_time
    curve = reg.client.get_metric_history(run.run_id, "train_loss")
    assert [(m.step, m.value) for m in curve] == [(1, 2.5), (2, 2.1)]
    val = reg.client.get_metric_history(run.run_id, "val_ndcg_at_10")
    assert [m.step for m in val] == [0, 1, 2]
    metrics = done.data.metrics
    for key in ("ndcg_at_10", "recall_at_10", "champion_ndcg_at_10", "popularity_ndcg_at_10"):
        assert key in metrics
    assert metrics["train_seconds"] == pytest.approx(0.2) and "best_epoch" not in metrics
    note = done.data.tags["mlflow.note.content"]
    assert "Gate passed" in note and promoted.decision.reason in note
    (dataset,) = done.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.dataset.digest) == ("interactions", "f1")
    assert {t.key: t.value for t in dataset.tags}["mlflow.data.context"] == "training"
    assert json.loads(dataset.dataset.profile)["num_rows"] == 3
    files = {a.path for a in reg.client.list_artifacts(run.run_id)}
    assert {"report.md", "evaluation"} <= files
    (model,) = done.outputs.model_outputs  # the registered model is the run's output
    assert reg.version_info("1")["source"] == f"models:/{model.model_id}"


def test_a_step_that_raises_fails_the_run_and_registers_nothing(env):
    home, config = env
    config = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, model_name="raises")
    )
    reg = registry.configure(home, config)
    opened = reg.candidate_run("full-retrain", ["0b1c2d3e44", "ac1eb9e2ff"])
    with pytest.raises(RuntimeError, match="out of memory"), opened as run:
        raise RuntimeError("out of memory")
    failed = reg.client.get_run(run.run_id)
    assert failed.info.status == "FAILED" and failed.info.end_time
    assert failed.info.run_name == "full-retrain 2 batches 0b1c2d3e..ac1eb9e2"
    assert "out of memory" in failed.data.tags["mlflow.note.content"]
    assert reg.list_versions() == []


def test_experiments_are_classic_ml_even_when_created_before(env, tmp_path):
    """An experiment without the kind, or with one the UI inferred, is tagged classic ML; the
    benchmarks' experiment too."""
    home, config = env
    reg = registry.configure(home, config)
    old = reg.client.create_experiment("older", artifact_location=tmp_path.as_uri())
    reg.client.set_experiment_tag(old, registry.EXPERIMENT_KIND, "genai_development_inferred")
    older = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, experiment="older")
    )
    assert registry.configure(home, older).experiment_id == old
    assert reg.client.get_experiment(old).tags[registry.EXPERIMENT_KIND] == registry.CLASSIC_ML

    note = tmp_path / "bench.md"
    note.write_text("# bench\n", encoding="utf-8")
    run_id = registry.log_benchmark("quality", {}, {"ndcg_at_10": [0.1, 0.2]}, [note], config, home)
    bench = reg.client.get_experiment(reg.client.get_run(run_id).info.experiment_id)
    assert bench.name == "recloop-benchmarks"
    assert bench.tags[registry.EXPERIMENT_KIND] == registry.CLASSIC_ML


def test_run_names_say_version_kind_and_batches():
    assert registry.run_name("incremental", ["ac1eb9e2deadbeef"]) == "incremental batch ac1eb9e2"
    assert registry.run_name("from-scratch", ["a" * 16], "1") == "v1 from-scratch batch aaaaaaaa"
    assert registry.run_name("full-retrain", ["b1", "b2", "b3"], "5") == (
        "v5 full-retrain 3 batches b1..b3"
    )
    assert registry.run_name("incremental", []) == "incremental no batch"
    assert registry.training_kind("incremental", warm_start=True) == "incremental"
    assert registry.training_kind("incremental", warm_start=False) == "from-scratch"
    assert registry.training_kind("full-retrain", warm_start=False) == "full-retrain"
    assert registry.batch_list('["b1", "b2"]') == ["b1", "b2"] == registry.batch_list("b1,b2")


def test_a_baseline_serves_when_it_wins_and_a_better_learned_candidate_takes_over(env):
    """The gate's three-way choice with the real registry: a candidate below recent popularity
    is registered and kept, the baseline becomes a version and champion, served through the same
    pyfunc contract; the next candidate above every baseline replaces it."""
    import mlflow

    home, config = env
    config = dataclasses.replace(
        config, registry=dataclasses.replace(config.registry, model_name="fresh")
    )
    reg = registry.configure(home, config)
    learned = tiny_recommender(0)
    learned.metadata = {"trained_batches": ["b1"], "data_fingerprint": "f1"}
    lost = promote_candidate(
        learned, report(0.05, None, 0.02, recent=0.08), config, home,
        tags={"batch_ids": "b1", "data_fingerprint": "f1", "warm_start": "false"},
    )  # fmt: skip
    assert not lost.promoted and lost.decision.winner == "recent_popularity"
    assert lost.baseline_version is not None and lost.serving == "recent_popularity"
    assert reg.champion_version() == lost.baseline_version == lost.champion_version
    assert reg.challenger_version() == lost.version  # the learned candidate, kept
    candidate_tags = reg.version_info(lost.version)["tags"]
    assert candidate_tags["gate"] == "failed" and candidate_tags["model_kind"] == "learned"
    assert "<= recent popularity 0.0800" in candidate_tags["reason"]
    served = reg.version_info(lost.baseline_version)
    assert served["tags"]["model_kind"] == "baseline:recent_popularity"
    assert served["tags"]["training"] == "baseline" and served["tags"]["gate"] == "passed"
    assert served["tags"]["batch_ids"] == "b1" and served["tags"]["parent_version"] == ""
    assert "warm_start" not in served["tags"]
    run = reg.client.get_run(served["run_id"])
    assert run.info.run_name == f"v{lost.baseline_version} baseline recent_popularity batch b1"
    assert run.data.metrics["ndcg_at_10"] == pytest.approx(0.08)  # its own number, unprefixed
    assert run.data.metrics["candidate_ndcg_at_10"] == pytest.approx(0.05)
    note = run.data.tags["mlflow.note.content"]
    assert "Gate passed" in note and "promoted to champion" in note
    assert (
        "the recent popularity baseline serves"
        in reg.client.get_run(lost.run_id).data.tags["mlflow.note.content"]
    )

    # Served by alias through the same pyfunc contract, and rebuilt as the champion.
    model = mlflow.pyfunc.load_model("models:/fresh@champion")
    out = model.predict(pd.DataFrame({"user_id": ["u9"], "history": [["i5"]]}), params={"k": 3})
    assert list(out.columns) == ["user_id", "item_ids", "scores"]
    assert out.iloc[0]["item_ids"][0] != "i5" and len(out.iloc[0]["item_ids"]) == 3
    champion, info = registry.load_champion(config, home)
    assert champion.name == "recent_popularity" and info["version"] == lost.baseline_version
    assert champion.metadata["trained_batches"] == ["b1"]
    pyfunc, version, kind = registry.load_champion_pyfunc(config, home)
    assert (version, kind) == (lost.baseline_version, "baseline:recent_popularity")
    # The next update starts from the newest learned version, not from the baseline.
    start, start_info = reg.latest_learned()
    assert start_info["version"] == lost.version and start.metadata["trained_batches"] == ["b1"]

    # A later candidate above every baseline (and above the baseline champion) takes over.
    better = promote_candidate(
        tiny_recommender(1), report(0.10, 0.08, 0.02, recent=0.09), config, home,
        tags={"batch_ids": "b2", "data_fingerprint": "f2"},
    )  # fmt: skip
    assert better.promoted and better.serving == "learned"
    assert better.champion_version_before == lost.baseline_version
    assert reg.champion_version() == better.version
    assert reg.version_info(better.version)["tags"]["parent_version"] == lost.baseline_version
    # ... and a stale baseline champion that a fresher fit of itself beats is refreshed.
    worse = promote_candidate(
        tiny_recommender(2), report(0.03, 0.04, 0.02, recent=0.06), config, home,
        tags={"batch_ids": "b3", "data_fingerprint": "f3"},
    )  # fmt: skip
    assert worse.decision.winner == "recent_popularity" and worse.baseline_version
    assert reg.champion_version() == worse.baseline_version
    assert "champion below recent popularity" in worse.decision.reason


def test_a_passed_version_left_without_its_alias_is_promoted_by_the_next_run(tmp_path) -> None:
    """What a cycle killed between registering a passed version and moving ``champion`` leaves,
    and what the next run makes of it; a rollback's victims are not brought back."""
    from recloop.gate import Decision
    from tasks.promote import finish_promotion

    home, config = get_home(tmp_path / "home"), Config()
    first = promote_candidate(tiny_recommender(0), report(0.05, None, 0.02), config, home, tags={})
    reg = registry.configure(home, config)
    assert reg.unfinished_promotion(first.version) is None
    assert finish_promotion(config, home) is None  # nothing half-done

    # The version is created with its decision, then the process dies before the alias moves.
    passed = Decision("candidate", "promote: ndcg_at_10 0.0800 > champion 0.0500")
    logged = reg.log_candidate(
        tiny_recommender(1),
        report(0.08, 0.05, 0.02),
        tags={"parent_version": first.version, "batch_ids": "b2"},
        decision=passed,
    )
    assert reg.champion_version() == first.version
    [judged] = reg.judged_versions(first.version)
    assert judged["version"] == logged.version and judged["tags"]["gate"] == "passed"

    assert finish_promotion(config, home) == logged.version
    assert reg.champion_version() == logged.version == reg.challenger_version()
    reason = reg.version_info(logged.version)["tags"]["champion_reason"]
    assert reason.startswith(passed.reason) and "not promoted" in reason
    assert finish_promotion(config, home) is None  # done once

    # Rolled back: the demoted version was champion once; it is not promoted again.
    reg.rollback(first.version, "bad numbers in production")
    assert reg.judged_versions(first.version) == []
    assert finish_promotion(config, home) is None and reg.champion_version() == first.version
