"""Decide whether the text encoder needs domain-adaptive MLM pretraining, and run it.

Pretraining runs when there is no pretrained encoder yet, when ``force`` is set, or when the share
of the catalogue's item texts that the last pretraining did not see reaches
``config.encoder.change_threshold``. Otherwise the last pretrained encoder is reused (and with
``config.encoder.enabled`` False, the shipped base encoder). The state lives in
``home.encoders/current.json``; each pretraining writes its own folder ``home.encoders/<id>/``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from models.encoder import base_encoder_path, text_hash
from recloop.config import Config
from recloop.paths import Home
from recloop.pretraining import pretrain_mlm
from recloop.text import catalogue_texts

logger = logging.getLogger(__name__)

STATE_FILE = "current.json"


@dataclass
class PretrainResult:
    """Which encoder to embed with, and whether (and why) pretraining ran."""

    encoder_path: Path
    ran: bool
    reason: str
    report: dict[str, Any] = field(default_factory=dict)


def read_state(home: Home) -> dict[str, Any] | None:
    """The last pretraining's record (``encoder_path``, ``text_hashes``, ...), if any."""
    path = home.encoders / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _write_state(home: Home, state: dict[str, Any]) -> None:
    path = home.encoders / STATE_FILE
    tmp = path.with_name(f"{STATE_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def change_share(current: set[str], previous: set[str]) -> float:
    """Share of ``current`` text hashes that ``previous`` lacks (1.0 when nothing was seen)."""
    if not current:
        return 0.0
    return len(current - previous) / len(current)


def pretrain_encoder(
    catalogue: pd.DataFrame, home: Home, config: Config, force: bool = False
) -> PretrainResult:
    """Pretrain (or reuse) the text encoder for ``catalogue`` (which has ``clean_text``)."""
    if not config.encoder.enabled:
        return PretrainResult(base_encoder_path(), False, "encoder pretraining disabled")
    texts = [t for t in catalogue_texts(catalogue) if t.strip()]
    hashes = {text_hash(t) for t in texts}
    state = read_state(home)
    previous_path = Path(state["encoder_path"]) if state else None
    if state is None or previous_path is None or not previous_path.exists():
        reason = "no pretrained encoder yet"
        share = 1.0
    else:
        share = change_share(hashes, set(state.get("text_hashes", [])))
        threshold = config.encoder.change_threshold
        if force:
            reason = f"forced ({share:.1%} of item texts new or changed)"
        elif share >= threshold:
            reason = f"{share:.1%} of item texts new or changed (threshold {threshold:.0%})"
        else:
            return PretrainResult(
                previous_path,
                False,
                f"only {share:.1%} of item texts new or changed (threshold {threshold:.0%})",
                {"change_share": share},
            )
    if not texts:
        return PretrainResult(
            previous_path or base_encoder_path(), False, "catalogue has no item text"
        )

    # Continue from the last adapted encoder, so earlier adaptation is kept.
    start_from = previous_path if previous_path and previous_path.exists() else None
    start_from = start_from or base_encoder_path()
    digest = hashlib.sha1("\n".join(sorted(hashes)).encode()).hexdigest()[:8]
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{digest}"
    home.encoders.mkdir(parents=True, exist_ok=True)
    out_dir = home.encoders / name
    logger.info("pretrain: %s; MLM from %s on %d texts", reason, start_from, len(texts))
    mlm = pretrain_mlm(
        texts,
        start_from,
        out_dir,  # written under a temporary name, then renamed: never half-written
        config.encoder,
        config.seed,
    )
    report = mlm.to_dict()
    report.update(out_dir=str(out_dir), change_share=share, started_from=str(start_from))
    _write_state(
        home,
        {
            "encoder_path": str(out_dir),
            "created_at": int(time.time()),
            "text_hashes": sorted(hashes),
            "report": report,
        },
    )
    return PretrainResult(out_dir, True, reason, report)


@task(name="pretrain", cache_policy=NO_CACHE)
def pretrain_task(
    catalogue: pd.DataFrame, home: Home, config: Config, force: bool = False
) -> PretrainResult:
    """Prefect task: :func:`pretrain_encoder`."""
    return pretrain_encoder(catalogue, home, config, force)
