"""The clean-text stage: assemble and clean each item's text for the encoder."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from recloop.text import clean_catalogue

clean_text_task = task(name="clean_text", cache_policy=NO_CACHE)(clean_catalogue)
