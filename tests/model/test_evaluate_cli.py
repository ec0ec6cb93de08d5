"""``recloop evaluate`` on the champion of a real MLflow registry (SQLite in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from models.sasrec import Recommender, SeqRec
from recloop import registry
from recloop.cli import app
from recloop.config import Config, RecommenderConfig
from recloop.data import Dataset, write_dataset
from recloop.evaluation import EvaluationReport, evaluate_scorer
from recloop.paths import Home
from recloop.protocols import loo_split

pytestmark = pytest.mark.model

ITEMS = [f"i{j}" for j in range(12)]


def tiny_recommender(seed: int) -> Recommender:
    """Untrained but real: a 1-layer SeqRec over 12 items with random text vectors."""
    torch.manual_seed(seed)
    config = RecommenderConfig(hidden_size=16, num_layers=1, num_heads=2, max_seq_len=8, dropout=0)
    model = SeqRec(config, num_items=len(ITEMS), text_dim=8)
    with torch.no_grad():
        model.text_emb[1:] = torch.randn(len(ITEMS), 8)
    return Recommender(model, ITEMS, popularity=np.arange(len(ITEMS), 0, -1))


def dataset() -> Dataset:
    """30 users, 4-6 events each over the 12 items, seeded."""
    rng = np.random.default_rng(0)
    rows = [
        (f"u{u}", ITEMS[int(rng.integers(len(ITEMS)))], int(t))
        for u in range(30)
        for t in np.sort(rng.choice(1000, size=int(rng.integers(4, 7)), replace=False))
    ]
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": ITEMS, "title": ITEMS, "text": ""})
    return Dataset(items, interactions)


def dummy_report() -> EvaluationReport:
    row = {"ndcg_at_10": 0.1, "recall_at_10": 0.2, "mrr": 0.05, "n_cases": 1}
    return EvaluationReport(rows={"candidate": row}, n_users=1, n_items=12, seed=42, ks=(10,))


def test_evaluate_defaults_to_the_registered_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, config = Home(tmp_path / "home"), Config()
    reg = registry.configure(home, config)
    champion = reg.log_candidate(tiny_recommender(0), dummy_report())
    other = reg.log_candidate(tiny_recommender(1), dummy_report())
    reg.set_champion(champion.version, "test")
    # mlflow.set_tracking_uri exported the store's URI; the command must find it from --home alone.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = write_dataset(dataset(), tmp_path / "data")
    runner = CliRunner()

    args = ["evaluate", "--data", str(data), "--protocol", "loo", "--home", str(home.root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "split " in result.output and "recall@20" in result.output
    models = [line.split()[1] for line in result.output.splitlines() if line.startswith("loo ")]
    assert models == ["model", "popularity", "recent_popularity", "transitions"]

    (path,) = home.reports.glob("evaluate-loo-*.json")
    report = json.loads(path.read_text())
    assert report["model_uri"] == "models:/recloop@champion"
    (split,) = report["splits"]
    # The numbers are the champion's (seed 0), not the challenger's, on the same LOO cases.
    test = loo_split(dataset().interactions).test
    expected = evaluate_scorer(tiny_recommender(0), test, ITEMS, config.eval.ks)
    assert split["rows"]["model"] == pytest.approx(expected)
    assert split["rows"]["model"]["n_cases"] == len(test) - expected["n_target_in_history"] > 0
    assert set(split["rows"]) == {"model", "popularity", "recent_popularity", "transitions"}

    # An explicit version, and a URI that does not resolve (one line, non-zero).
    explicit = runner.invoke(app, [*args, "--model", f"models:/recloop/{other.version}"])
    assert explicit.exit_code == 0, explicit.output
    assert len(list(home.reports.glob("evaluate-loo-*.json"))) == 2
    missing = runner.invoke(app, [*args, "--model", "models:/recloop@nope"])
    assert missing.exit_code == 1
    lines = missing.output.strip().splitlines()
    assert lines[-1].startswith("recloop: cannot load models:/recloop@nope"), lines
