"""The MLflow pyfunc wrapper that serves a ``Recommender`` or a simple ``Baseline``
(docs/interfaces.md).

``mlflow.pyfunc.load_model("models:/recloop@champion").predict(df, params={"k": 10})`` with ``df``
holding ``user_id`` (str) and ``history`` (item ids, oldest first) returns ``user_id``,
``item_ids`` (k strings, best first) and ``scores`` (k floats). The model's state travels as an
artifact (``checkpoint`` for a learned recommender, ``baseline`` for a baseline), so a loaded model
never depends on the process that logged it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {"k": 10, "exclude_seen": True}
CHECKPOINT_ARTIFACT, BASELINE_ARTIFACT = "checkpoint", "baseline"


def parse_history(value: Any) -> list[str]:
    """A history as a list of item-id strings, from whatever the transport delivered.

    Accepts a list or tuple, a numpy array (pandas/pyarrow round trips), a JSON string such as
    ``'["1", "2"]'`` (CSV or hand-written REST payloads), a single id string, or None / NaN.
    """
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return [str(item) for item in value.tolist()]
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return [str(item) for item in json.loads(text)]
        return [text]
    if isinstance(value, float) and np.isnan(value):
        return []
    raise TypeError(f"history must be a list of item ids, got {type(value).__name__}")


def _bool(value: Any) -> bool:
    # REST clients may send "false"; bool("false") would be True.
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def predictions_frame(
    user_ids: list[str], item_ids: list[list[str]], scores: list[list[float]]
) -> pd.DataFrame:
    """The contract output: ``user_id``, ``item_ids`` (list of str), ``scores`` (list of float)."""
    return pd.DataFrame(
        {
            "user_id": [str(u) for u in user_ids],
            "item_ids": [[str(i) for i in row] for row in item_ids],
            "scores": [[float(s) for s in row] for row in scores],
        }
    )


class RecloopModel(mlflow.pyfunc.PythonModel):
    """Serves the top-k recommendations of a ``models.sasrec.Recommender`` or a
    ``models.baselines.Baseline`` through pyfunc."""

    def __init__(self) -> None:
        self.recommender: Any = None

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Rebuild the model from its ``baseline`` or ``checkpoint`` artifact."""
        if BASELINE_ARTIFACT in context.artifacts:
            from models.baselines import Baseline

            self.recommender = Baseline.load(context.artifacts[BASELINE_ARTIFACT])
        else:
            from models.sasrec import Recommender  # imported here: torch only where it serves

            self.recommender = Recommender.load(context.artifacts[CHECKPOINT_ARTIFACT])
        logger.info(
            "loaded %s with %d items",
            getattr(self.recommender, "name", "recommender"),
            len(self.recommender.item_ids),
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Top-k item ids and scores per row; params ``k`` (10) and ``exclude_seen`` (True)."""
        if self.recommender is None:
            raise RuntimeError("RecloopModel has no model: load it through mlflow.pyfunc")
        params = {**DEFAULT_PARAMS, **(params or {})}
        k = int(params["k"])
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        if "history" not in model_input:
            raise ValueError("input needs a 'history' column (list of item ids, oldest first)")
        user_ids = (
            model_input["user_id"].astype(str).tolist()
            if "user_id" in model_input
            else [""] * len(model_input)
        )
        histories = [parse_history(value) for value in model_input["history"]]
        items, scores = self.recommender.recommend(
            histories, k=k, exclude_seen=_bool(params["exclude_seen"])
        )
        return predictions_frame(user_ids, items, scores)
