"""The fine-tune stage: embed the catalogue with the current encoder, then train the recommender."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.encoder import TextEmbedder
from models.sasrec import Recommender
from recloop.config import Config
from recloop.fitting import FineTuneResult, catalogue_order, fit_recommender, learn_judged
from recloop.paths import Home
from recloop.text import catalogue_texts
from tasks.prepare import CycleData

logger = logging.getLogger(__name__)


def fine_tune(
    train_interactions: pd.DataFrame,
    catalogue: pd.DataFrame,
    encoder_path: Path,
    home: Home,
    config: Config,
    parent: Recommender | None,
    focus_users: set[str],
    new_interactions: pd.DataFrame | None = None,
) -> FineTuneResult:
    """Embed the catalogue with the encoder at ``encoder_path`` (cached under
    ``home.embedding_cache``) and train (see :func:`fit_recommender`)."""
    item_ids, _ = catalogue_order(catalogue, parent)
    catalogue = catalogue.drop_duplicates("item_id", keep="last")
    texts_by_id = dict(
        zip(catalogue["item_id"].astype(str), catalogue_texts(catalogue), strict=True)
    )
    embedder = TextEmbedder(encoder_path, home.embedding_cache, config.encoder)
    # Parent items missing from the current catalogue keep an empty-text vector.
    embeddings = embedder.embed([texts_by_id.get(i, "") for i in item_ids])
    logger.info(
        "fine_tune: embedded %d items (%d encoded, %d cached)",
        len(item_ids),
        embedder.stats.encoded,
        embedder.stats.cached,
    )
    result = fit_recommender(
        train_interactions,
        item_ids,
        embeddings,
        config,
        parent=parent,
        focus_users=focus_users,
        metadata={"encoder_path": str(encoder_path), "encoder": embedder.fingerprint},
        new_interactions=new_interactions,
    )
    result.report["n_encoded"] = embedder.stats.encoded
    result.report["n_cached"] = embedder.stats.cached
    return result


def learn_judged_stage(
    judged: FineTuneResult, data: CycleData, config: Config, parent: Recommender | None
) -> FineTuneResult:
    """After evaluation: the judged candidate taught the held-out events it was judged on
    (:func:`recloop.fitting.learn_judged`), the version the cycle registers."""
    if data.interactions is None:
        return judged
    new = [frame for frame in (data.new_interactions, data.heldout_events) if frame is not None]
    return learn_judged(
        judged,
        data.interactions,
        config,
        parent,
        data.focus_users,
        pd.concat(new, ignore_index=True) if new else None,
    )


fine_tune_task = task(name="fine_tune", cache_policy=NO_CACHE)(fine_tune)
learn_judged_task = task(name="learn_judged", cache_policy=NO_CACHE)(learn_judged_stage)
