"""The ``pretrain-encoder`` flow: domain-adaptive MLM pretraining on its own (docs/interfaces.md).

load the archived catalogue → clean_text → pretrain. It runs when the catalogue's cleaned text has
changed enough since the last pretraining (``encoder.change_threshold``), or when forced; the
``feedback-loop`` then embeds items with the home's current encoder. Scheduled (e.g. weekly) so that
the expensive adaptation happens off the path of an arriving batch.

Runs are named ``pretrain · <N> items`` (``pretrain · catalogue`` until the catalogue is read),
then with the outcome (``· ran``, ``· skipped``), and tagged ``recloop``, ``home:<folder>`` and
``training:pretrain``.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from recloop.config import load_config
from recloop.orchestration import label_flow_run, run_tags, training_lock
from recloop.paths import get_home
from tasks.clean_text import clean_text_task
from tasks.prepare import load_catalogue_task
from tasks.pretrain import pretrain_task

TRAINING = "pretrain"  # the run's ``training`` tag


@flow(name="pretrain-encoder", flow_run_name=f"{TRAINING} · catalogue", log_prints=False)
def pretrain_encoder(
    home: str | None = None, config_path: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Pretrain the text encoder on the archived catalogue's cleaned text, if it changed enough.

    Args:
        home: ``RECLOOP_HOME``; default from the environment.
        config_path: a YAML file overriding the default config.
        force: pretrain even if the catalogue text has barely changed.

    Returns ``status`` (``pretrained``, ``skipped`` or ``no-data``), the reason, the encoder the
    loop will use and the pretraining report (held-out perplexity before and after).
    """
    log = get_run_logger()
    started = time.perf_counter()
    config = load_config(config_path)
    recloop_home = get_home(home).ensure()
    label_flow_run(tags=run_tags(recloop_home, TRAINING))
    # The encoder state is shared with the feedback loop's own pretraining step.
    with training_lock(recloop_home, "pretrain-encoder"):
        items = load_catalogue_task(recloop_home)
        if len(items) == 0:
            log.warning(
                "No catalogue is archived under %s: nothing to pretrain on.", recloop_home.archive
            )
            label_flow_run(f"{TRAINING} · no catalogue")
            return {"status": "no-data", "seconds": round(time.perf_counter() - started, 1)}
        label_flow_run(f"{TRAINING} · {len(items)} items")
        catalogue = clean_text_task(items, config.text)
        result = pretrain_task(catalogue, recloop_home, config, force=force)
    label_flow_run(f"{TRAINING} · {len(items)} items · {'ran' if result.ran else 'skipped'}")
    log.info(
        "pretrain-encoder: %s (%s); encoder %s",
        "ran" if result.ran else "skipped",
        result.reason,
        result.encoder_path,
    )
    return {
        "status": "pretrained" if result.ran else "skipped",
        "reason": result.reason,
        "encoder_path": str(result.encoder_path),
        "report": result.report,
        "seconds": round(time.perf_counter() - started, 1),
    }
