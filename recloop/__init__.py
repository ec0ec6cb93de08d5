"""recloop: a Prefect-orchestrated feedback loop for a text-aware sequential recommender."""

__version__ = "0.1.0"
