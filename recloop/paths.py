"""The one place that knows where recloop keeps its state (docs/interfaces.md).

Nothing here touches the disk at import time: callers ask for a :class:`Home` and call
:meth:`Home.ensure` when they are about to write.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "RECLOOP_HOME"
DEFAULT_HOME = ".recloop"


@dataclass(frozen=True)
class Home:
    """The folder tree under ``RECLOOP_HOME``."""

    root: Path

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def embedding_cache(self) -> Path:
        return self.cache / "embeddings"

    @property
    def encoders(self) -> Path:
        """Pretrained (MLM-adapted) text encoders, one folder per pretraining."""
        return self.root / "encoders"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def ledger(self) -> Path:
        """Append-only JSON-lines record of every batch landed (archived or quarantined)."""
        return self.root / "ledger.jsonl"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        return self.root / "mlartifacts"

    def ensure(self) -> Home:
        """Create the folder tree (idempotent) and return self."""
        for path in (
            self.landing,
            self.archive,
            self.quarantine,
            self.embedding_cache,
            self.encoders,
            self.checkpoints,
            self.reports,
            self.mlartifacts,
        ):
            path.mkdir(parents=True, exist_ok=True)
        return self


def get_home(root: str | os.PathLike[str] | None = None) -> Home:
    """The home named by ``root``, else ``$RECLOOP_HOME``, else ``./.recloop`` (absolute)."""
    chosen = root if root is not None else os.environ.get(ENV_HOME, DEFAULT_HOME)
    return Home(Path(chosen).expanduser().resolve())
