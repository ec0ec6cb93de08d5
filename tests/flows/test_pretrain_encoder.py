"""The real ``pretrain-encoder`` flow on a tiny config: it pretrains on the archived catalogue
when there is no adapted encoder yet, skips when the text has not changed, and the loop's state
(``encoders/current.json``) names the encoder it made."""

from __future__ import annotations

from pathlib import Path

import pytest

from recloop.demo import simulate
from recloop.landing import land_batch
from recloop.paths import get_home
from tasks.pretrain import read_state

pytestmark = pytest.mark.flows


def test_pretrain_encoder_flow_pretrains_once_then_skips(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    from flows.pretrain_encoder import pretrain_encoder

    home = get_home(tmp_path / "home").ensure()
    empty = pretrain_encoder(home=str(home.root), config_path=str(tiny_config))
    assert empty["status"] == "no-data"

    data = simulate(seed=4, n_users=20, n_items=40, events_per_user=5)
    batch, items = tmp_path / "batch.parquet", tmp_path / "items.parquet"
    data.interactions.to_parquet(batch, index=False)
    data.items.to_parquet(items, index=False)
    assert land_batch(home, batch, items).status == "archived"

    first = pretrain_encoder(home=str(home.root), config_path=str(tiny_config))
    assert first["status"] == "pretrained", first
    assert read_state(home)["encoder_path"] == first["encoder_path"]
    assert Path(first["encoder_path"]).is_dir()

    again = pretrain_encoder(home=str(home.root), config_path=str(tiny_config))
    assert again["status"] == "skipped" and "0.0%" in again["reason"]
    assert again["encoder_path"] == first["encoder_path"]  # the loop keeps using it
