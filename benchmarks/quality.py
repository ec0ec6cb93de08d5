"""Model-quality benchmark: full ranking, the recommender beside simple baselines.

Two protocols (``--protocol``). ``loo`` (the default): for every dataset, each user's events in
time order give the last item as the test target, the one before it as the validation target, and
the rest as training data (users with fewer than three events are training data only). The
recommender is trained on the training part with early stopping on the validation targets, then
scored on the test targets with the validation item in the history
(``recloop.protocols.loo_split``). ``temporal``: the events are cut by time into a base period and
``--windows`` windows (``recloop.protocols.temporal_split``, the base a ``replay.base_fraction`` of
the events); the test is the last window (``--targets``: every event there with a history, or each
user's first), the validation the window before it, and the training data everything before the
validation window; no event after the training data is seen by a model or a baseline. The
baselines -- popularity, recent popularity and item-to-item transitions -- are fitted on the
training part for the validation cases and on it plus the validation events for the test cases;
recent popularity counts the last 10 % of the period it is fitted on under ``loo`` and the last
window of it under ``temporal``. Variants: text+ID (the default), ID-only, text-only and text+ID
without MLM pretraining (the ablation). text+ID and text-only embed the items with the encoder
MLM-pretrained on that dataset's cleaned catalogue text (:func:`recloop.pretraining.pretrain_mlm`,
default config); the ablation with the shipped base encoder.
Every number is NDCG/Recall@k with full ranking over the catalogue, history excluded, pessimistic
ties (:func:`recloop.evaluation.evaluate_scorer`). Each variant's row also says what the product
would serve in its place (``served``): the product's gate (:func:`recloop.gate.choose_champion`,
no champion) picks the variant or a baseline on the validation cases, and the pick's test figures
are reported.

Run ``recloop bench quality`` (defaults to the datasets in ``../shared/datasets``); it
writes ``reports/quality.md`` and ``reports/quality.json`` (``quality-temporal.*`` under
``temporal``).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from benchmarks.reporting import machine_description as _machine
from benchmarks.reporting import plot_bars, write_report
from models.encoder import TextEmbedder, base_encoder_path
from recloop.baselines import ItemTransitions, Popularity, RecentPopularity
from recloop.config import Config, GateConfig, load_config
from recloop.data import EvalCases, read_dataset, split_windows
from recloop.evaluation import evaluate_scorer
from recloop.fitting import fit_recommender
from recloop.gate import CANDIDATE, choose_champion
from recloop.paths import get_home
from recloop.pretraining import pretrain_mlm
from recloop.protocols import TEMPORAL_TARGETS, Split, make_splits
from recloop.search import DEFAULT as DEFAULT_SETTING
from recloop.search import apply_setting
from recloop.text import catalogue_texts, clean_catalogue

logger = logging.getLogger(__name__)

# name -> (recloop.importers format, folder name under the shared datasets folder)
SHARED_DATASETS = {
    "movielens-latest-small": "movielens",
    "amazon-instruments-2014": "amazon-reviews",
    "amazon-office-2014": "canonical",
}
# name -> (use_text, use_id); "text+id" is the default model
VARIANTS = {
    "text+id": (True, True),
    "id": (False, True),
    "text": (True, False),
    "text+id-no-mlm": (True, True),
}
# The text encoder a variant embeds items with: "mlm" = pretrained on the dataset's catalogue
# text (the loop's default), "base" = the shipped all-MiniLM-L6-v2 (the MLM ablation).
VARIANT_ENCODERS = {"text+id": "mlm", "text": "mlm", "text+id-no-mlm": "base"}
BASELINE_NAMES = ("popularity", "recent_popularity", "transitions")
# The baselines of each protocol. Recent popularity's window differs: the last 10 % of the
# period it is fitted on under "loo", the last temporal window of it under "temporal".
PROTOCOL_BASELINES = {
    "loo": BASELINE_NAMES,
    "temporal": BASELINE_NAMES,
}


@dataclass
class PreparedDataset:
    """A dataset ready to benchmark: catalogue order, text embeddings and the LOO split."""

    name: str
    item_ids: list[str]
    embeddings: np.ndarray  # (len(item_ids), text_dim): the MLM encoder's when it ran
    split: Split
    summary: dict[str, int]
    base_embeddings: np.ndarray | None = None  # the shipped encoder's, for the MLM ablation
    mlm: dict[str, Any] | None = None  # the MLM pretraining's report, when it ran
    protocol: str = "loo"
    # Under ``temporal``: per case set ("validation", "test"), the time spanned by the last window
    # of the events the baselines are fitted on (recent popularity counts that window).
    window_seconds: dict[str, int] = dataclasses.field(default_factory=dict)


def make_split(
    interactions: pd.DataFrame,
    protocol: str = "loo",
    windows: int = 4,
    base_fraction: float = 0.5,
    targets: str = "all",
) -> tuple[Split, dict[str, int]]:
    """The benchmark's split of ``interactions``: ``loo``, or the last of ``windows`` temporal
    windows (test: the last window; validation: the window before it). Under ``temporal`` also
    the time spanned by the last window of each case set's training events, for recent
    popularity (the issue's "recent popularity (last window)"): the validation window for the
    test, the window before it (the base period when ``windows`` is 2) for the validation.
    Timestamps may be positions rather than seconds (``recloop.baselines.RecentPopularity``):
    the windows are then cut by position, and so is this span."""
    if protocol == "temporal" and windows < 2:
        raise ValueError(f"the temporal benchmark needs at least 2 windows, got {windows}")
    split = make_splits(interactions, protocol, windows, base_fraction, targets)[-1]
    if protocol == "loo":
        return split, {}
    parts = split_windows(interactions, windows + 1, base_fraction)  # as temporal_split cuts

    def span(part: pd.DataFrame) -> int:
        return int(part["timestamp"].max() - part["timestamp"].min())

    return split, {"validation": span(parts[-3]), "test": span(parts[-2])}


def prepare_dataset(
    name: str,
    directory: Path,
    config: Config,
    cache_dir: Path | None,
    *,
    variants: Sequence[str] = tuple(VARIANTS),
    encoder_dir: Path | None = None,
    protocol: str = "loo",
    windows: int = 4,
    targets: str = "all",
) -> PreparedDataset:
    """Read a canonical dataset, embed its cleaned item texts (cached per encoder) and split it
    (:func:`make_split`, the temporal base being ``config.replay.base_fraction`` of the events).

    When a variant in ``variants`` needs it (and ``config.encoder.enabled``), the encoder is
    first MLM-pretrained on the catalogue text into ``encoder_dir/<name>`` (a temporary folder
    when None); the base encoder's embeddings are computed only for the ablation (or when no
    MLM encoder is needed)."""
    dataset = read_dataset(directory)
    items = clean_catalogue(dataset.items, config.text)
    item_ids = items["item_id"].astype(str).tolist()
    texts = catalogue_texts(items)
    encoders = {VARIANT_ENCODERS[v] for v in variants if v in VARIANT_ENCODERS}
    if not config.encoder.enabled:
        encoders = {"base"} if encoders else set()
    mlm: dict[str, Any] | None = None
    embeddings: np.ndarray | None = None
    if "mlm" in encoders:
        with tempfile.TemporaryDirectory(prefix="recloop-mlm-") as tmp:
            folder, mlm = pretrain_catalogue_encoder(
                name, texts, config, Path(encoder_dir) if encoder_dir else Path(tmp)
            )
            embeddings = _embed(name, folder, texts, config, cache_dir)
    base = None
    if "base" in encoders or embeddings is None:
        base = _embed(name, base_encoder_path(), texts, config, cache_dir)
    logger.info("%s: %s", name, dataset.summary())
    split, spans = make_split(
        dataset.interactions, protocol, windows, config.replay.base_fraction, targets
    )
    return PreparedDataset(
        name,
        item_ids,
        embeddings if embeddings is not None else base,
        split,
        dataset.summary(),
        base_embeddings=base,
        mlm=mlm,
        protocol=protocol,
        window_seconds=spans,
    )


def _embed(
    name: str, encoder: Path, texts: list[str], config: Config, cache_dir: Path | None
) -> np.ndarray:
    embedder = TextEmbedder(encoder, cache_dir, config.encoder)
    embeddings = embedder.embed(texts)
    logger.info("%s: %d texts encoded with %s", name, embedder.stats.encoded, encoder)
    return embeddings


def pretrain_catalogue_encoder(
    name: str, texts: Sequence[str], config: Config, encoder_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """MLM-pretrain the shipped encoder on one dataset's cleaned catalogue ``texts`` with
    ``config.encoder`` into ``encoder_dir/name``; return the folder and the MLM report.

    Always from the base encoder and always rerun (no reuse across runs): the report's
    perplexities and seconds are this run's.
    """
    out = Path(encoder_dir) / name
    report = pretrain_mlm(
        [t for t in texts if t.strip()],
        base_encoder_path(),
        out,
        config.encoder,
        config.seed,
    )
    return out, report.to_dict()


def _metrics(scorer: Any, cases: EvalCases, item_ids: list[str], config: Config) -> dict:
    out = evaluate_scorer(scorer, cases, item_ids, config.eval.ks)
    return {key: float(value) for key, value in out.items()}


def evaluate_baselines(data: PreparedDataset, config: Config) -> dict[str, dict[str, Any]]:
    """Validation and test metrics of the protocol's simple baselines: fitted on ``train`` for
    the validation cases and on ``train_full`` (with the validation events) for the test cases.
    Recent popularity counts the last window of those events under ``temporal``
    (``window_seconds``), else its default, the last 10 % of their time span."""
    names = PROTOCOL_BASELINES[data.protocol]
    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    for part, train, cases in (
        ("validation", data.split.train, data.split.validation),
        ("test", data.split.train_full, data.split.test),
    ):
        window = data.window_seconds.get(part)
        scorers = {
            "popularity": Popularity(train, data.item_ids),
            "recent_popularity": RecentPopularity(
                train, data.item_ids, window_seconds=None if window is None else max(1, window)
            ),
            "transitions": ItemTransitions(train, data.item_ids),
        }
        for name in names:
            out[name][part] = _metrics(scorers[name], cases, data.item_ids, config)
    return out


def evaluate_variant(
    data: PreparedDataset, config: Config, variant: str, refit: bool = True
) -> dict[str, Any]:
    """Train one model variant and score it.

    The model is trained on ``train`` with early stopping on the validation cases; its scores on
    both splits are ``validation`` and ``test_train_only``. With ``refit`` (the headline, as the
    baselines it is compared with are fitted on ``train_full`` for the test), a fresh model is
    then trained on ``train_full`` for the number of epochs validation chose and scored as
    ``test``; otherwise ``test`` is the early-stopped model's.
    """
    use_text, use_id = VARIANTS[variant]
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, use_text=use_text, use_id=use_id)
    )
    embeddings = data.embeddings
    encoder = "mlm" if data.mlm is not None else "base"
    if VARIANT_ENCODERS.get(variant) == "base" and data.base_embeddings is not None:
        embeddings, encoder = data.base_embeddings, "base"
    result = fit_recommender(
        data.split.train,
        data.item_ids,
        embeddings,
        config,
        validation=data.split.validation,
    )
    report = result.report
    out = {
        "validation": _metrics(result.recommender, data.split.validation, data.item_ids, config),
        "test_train_only": _metrics(result.recommender, data.split.test, data.item_ids, config),
        "train_seconds": round(float(report["seconds"]), 1),
        "epochs": report["epochs"],
        "best_epoch": report["best_epoch"],
        "stopped_reason": report["stopped_reason"],
        "text_encoder": encoder if use_text else None,
        "prior_weight": report["prior_weight"],
        "recency_weight": report["recency_weight"],
        "prior_validation": report["prior_validation"],
        "search": report.get("search"),
    }
    out["test"] = out["test_train_only"]
    scored = result.recommender
    if refit:
        epochs = max(1, int(report["best_epoch"] or report["epochs"]))
        # The refit has no validation cases: it keeps the prior weight validation chose.
        # ... and the setting the search chose (the refit has nothing to search by).
        setting = (report.get("search") or {}).get("chosen", DEFAULT_SETTING)
        refit_config = dataclasses.replace(
            config,
            train=dataclasses.replace(config.train, epochs=epochs, search=()),
            model=dataclasses.replace(
                apply_setting(config.model, setting), prior_weights=(report["prior_weight"],)
            ),
        )
        # No validation cases: every train_full event is trained on, for a fixed epoch count.
        refitted = fit_recommender(
            data.split.train_full,
            data.item_ids,
            embeddings,
            refit_config,
            validation=EvalCases([], [], []),
        )
        scored = refitted.recommender
        # ... and the recency weight (over the refit data's recent counts).
        scored.recency_weight = report["recency_weight"]
        out["test"] = _metrics(scored, data.split.test, data.item_ids, config)
        out["refit_seconds"] = round(float(refitted.report["seconds"]), 1)
    # The ablation: the same model without its priors.
    weights = scored.prior_weight, scored.recency_weight
    scored.prior_weight, scored.recency_weight = 0.0, 0.0
    out["test_no_prior"] = (
        _metrics(scored, data.split.test, data.item_ids, config) if any(weights) else out["test"]
    )
    scored.prior_weight, scored.recency_weight = weights
    return out


def served_model(
    row: dict[str, Any], baselines: dict[str, dict[str, Any]], policy: GateConfig
) -> dict[str, Any]:
    """What the product would serve in place of the model of ``row``: the gate
    (:func:`recloop.gate.choose_champion`, no champion) decides between the model and every
    baseline in ``baselines`` on their ``validation`` metrics (the same cases); the result names
    the winner (``"candidate"`` or a baseline), the gate's reason, and the winner's ``test``
    metrics."""
    decision = choose_champion(
        row["validation"],
        None,
        {name: metrics["validation"] for name, metrics in baselines.items()},
        policy,
    )
    test = row["test"] if decision.promote else baselines[decision.winner]["test"]
    return {"winner": decision.winner, "reason": decision.reason, "test": dict(test)}


def run_quality(
    datasets: dict[str, Path],
    config: Config,
    out_dir: Path,
    *,
    variants: tuple[str, ...] = tuple(VARIANTS),
    cache_dir: Path | None = None,
    encoder_dir: Path | None = None,
    log_mlflow: bool = False,
    home: Path | None = None,
    protocol: str = "loo",
    windows: int = 4,
    targets: str = "all",
    seeds: Sequence[int] = (),
) -> dict[str, Any]:
    """Benchmark every canonical dataset folder in ``datasets`` under ``protocol`` (``windows``
    and ``targets`` for ``temporal``, see :func:`make_split`); write ``quality.md``,
    ``quality.json`` and the plots ``quality-ndcg.png`` / ``quality-seconds.png`` under
    ``out_dir`` (``quality-temporal*`` under ``temporal``), log them to MLflow when
    ``log_mlflow`` (experiment ``recloop-benchmarks`` of ``home``), and return the JSON figures.
    Each dataset's MLM-pretrained encoder goes to ``encoder_dir/<name>`` (a temporary folder
    when None).

    ``seeds`` (default: ``config.seed`` alone) repeats everything a seed drives -- the MLM
    pretraining, each model's initialisation and batch order -- once per seed (encoders under
    ``encoder_dir/seed-<seed>/<name>`` when there are several). A model's row is then the mean
    over the seeds (``per_seed`` and ``test_std`` beside it) and the targets are judged on that
    mean; the baselines do not depend on the seed and are scored once. What is served
    (:func:`served_model`) is decided per seed.
    """
    if protocol not in PROTOCOL_BASELINES:
        raise ValueError(f"unknown protocol {protocol!r} (use loo or temporal)")
    if protocol == "temporal" and targets not in TEMPORAL_TARGETS:
        raise ValueError(f"unknown temporal targets {targets!r} (use all or first)")
    if not datasets:
        raise ValueError("no dataset to benchmark (none given, none found under --shared)")
    seeds = tuple(int(seed) for seed in seeds) or (config.seed,)
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {list(seeds)}")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "protocol": protocol,
        **(
            {"windows": windows, "targets": targets, "base_fraction": config.replay.base_fraction}
            if protocol == "temporal"
            else {}
        ),
        "machine": _machine(),
        "config": {
            "encoder": dataclasses.asdict(config.encoder),
            "model": dataclasses.asdict(config.model),
            "train": config.train.__dict__,
        },
        "seed": seeds[0],
        "seeds": list(seeds),
        "datasets": {},
    }
    for name, directory in datasets.items():
        runs: dict[int, tuple[PreparedDataset, dict[str, Any]]] = {}
        for seed in seeds:
            seeded = dataclasses.replace(config, seed=seed)
            torch.manual_seed(seed)
            data = prepare_dataset(
                name,
                Path(directory),
                seeded,
                cache_dir,
                variants=variants,
                encoder_dir=encoder_dir / f"seed-{seed}"
                if encoder_dir is not None and len(seeds) > 1
                else encoder_dir,
                protocol=protocol,
                windows=windows,
                targets=targets,
            )
            seed_rows: dict[str, Any] = {}
            for variant in variants:
                seed_rows[variant] = evaluate_variant(data, seeded, variant)
                logger.info(
                    "%s %s seed %d: test ndcg@10 %.4f (%.0fs)",
                    name,
                    variant,
                    seed,
                    seed_rows[variant]["test"]["ndcg_at_10"],
                    seed_rows[variant]["train_seconds"],
                )
            runs[seed] = (data, seed_rows)
        data = runs[seeds[0]][0]
        # The split and the catalogue do not depend on the seed: the baselines are scored once.
        rows: dict[str, Any] = evaluate_baselines(data, config)
        baselines = dict(rows)
        for _, seed_rows in runs.values():
            for row in seed_rows.values():
                row["served"] = served_model(row, baselines, config.gate)
        for variant in variants:
            rows[variant] = (
                runs[seeds[0]][1][variant]
                if len(seeds) == 1
                else mean_row({seed: runs[seed][1][variant] for seed in seeds})
            )
        results["datasets"][name] = {
            "summary": data.summary,
            "split": data.split.summary(),
            "n_test_cases": len(data.split.test),
            "mlm": _mlm_summary(data.mlm),
            "rows": rows,
            "targets": _targets(rows, protocol),
            **(
                {
                    "per_seed": {
                        str(seed): {"mlm": _mlm_summary(runs[seed][0].mlm), "rows": runs[seed][1]}
                        for seed in seeds
                    }
                }
                if len(seeds) > 1
                else {}
            ),
        }
        # Rewritten after every dataset: a long run stopped part-way keeps what it measured.
        paths = write_outputs(results, out_dir)
    results["files"] = [str(path) for path in paths]
    if log_mlflow:
        results["mlflow_run_id"] = _log_mlflow(results, paths, config, home)
    return results


METRIC_GROUPS = ("test", "validation", "test_train_only", "test_no_prior")


def mean_row(by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One model's row over several seeds: each metric's mean, the test metrics' population
    standard deviation (``test_std``), every seed's test NDCG@10 (``per_seed``), the mean
    training and refit seconds and prior weight, the longest training (``train_seconds_max``,
    which the 10-minute target is judged on) and, when each seed's row says what is served, the
    mean of the served test metrics with each seed's winner and the number of seeds a baseline
    served (``served``: ``test``, ``winners``, ``baseline_seeds``)."""
    rows = list(by_seed.values())
    out: dict[str, Any] = {}
    for group in METRIC_GROUPS:
        if all(group in row for row in rows):
            out[group] = {
                key: float(np.mean([row[group][key] for row in rows])) for key in rows[0][group]
            }
    out["test_std"] = {
        key: float(np.std([row["test"][key] for row in rows])) for key in rows[0]["test"]
    }
    out["per_seed"] = {str(seed): row["test"]["ndcg_at_10"] for seed, row in by_seed.items()}
    for key in ("train_seconds", "refit_seconds", "prior_weight"):
        if all(key in row for row in rows):
            out[key] = round(float(np.mean([row[key] for row in rows])), 1)
    out["train_seconds_max"] = max(row["train_seconds"] for row in rows)
    out["text_encoder"] = rows[0]["text_encoder"]
    if all("served" in row for row in rows):
        served = [row["served"] for row in rows]
        out["served"] = {
            "test": {
                key: float(np.mean([s["test"][key] for s in served])) for key in served[0]["test"]
            },
            "winners": {str(seed): row["served"]["winner"] for seed, row in by_seed.items()},
            "baseline_seeds": sum(s["winner"] != CANDIDATE for s in served),
        }
    return out


def report_stem(protocol: str) -> str:
    """The report files' stem: ``quality`` (leave-one-out) or ``quality-temporal``."""
    return "quality" if protocol == "loo" else f"quality-{protocol}"


PROTOCOL_TITLES = {"loo": "Leave-one-out", "temporal": "Temporal (last window)"}


def write_outputs(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """The plots, then ``<stem>.md`` (which shows them) and ``<stem>.json``."""
    stem = report_stem(results["protocol"])
    names = list(results["datasets"])
    rows = [results["datasets"][name]["rows"] for name in names]
    models = [m for m in (*VARIANTS, *BASELINE_NAMES) if any(m in r for r in rows)]
    ndcg_png = plot_bars(
        out_dir / f"{stem}-ndcg.png",
        names,
        {m: [r[m]["test"]["ndcg_at_10"] if m in r else None for r in rows] for m in models},
        f"{PROTOCOL_TITLES[results['protocol']]} test NDCG@10, full ranking",
        "NDCG@10",
    )
    trained = [m for m in VARIANTS if m in models]
    seconds_png = plot_bars(
        out_dir / f"{stem}-seconds.png",
        names,
        {m: [r[m]["train_seconds"] if m in r else None for r in rows] for m in trained},
        "Training wall time (early-stopped run)",
        "seconds",
    )
    md, js = write_report(out_dir, stem, to_markdown(results), results)
    return [md, js, ndcg_png, seconds_png]


def _log_mlflow(
    results: dict[str, Any], paths: list[Path], config: Config, home: Path | None
) -> str:
    """Log the benchmark as one run of the home's ``recloop-benchmarks`` experiment."""
    from recloop import registry

    metrics: dict[str, float | None] = {}
    for name, entry in results["datasets"].items():
        for variant, row in entry["rows"].items():
            model = variant.replace("+", "_")  # MLflow metric names may not hold "+"
            for key in ("ndcg_at_10", "recall_at_10", "ndcg_at_20", "recall_at_20"):
                metrics[f"{name}/{model}/{key}"] = row["test"].get(key)
            if "train_seconds" in row:
                metrics[f"{name}/{model}/train_seconds"] = row["train_seconds"]
            if "served" in row:
                metrics[f"{name}/{model}/served_ndcg_at_10"] = row["served"]["test"]["ndcg_at_10"]
            if "test_no_prior" in row:
                metrics[f"{name}/{model}/ndcg_at_10_without_prior"] = row["test_no_prior"][
                    "ndcg_at_10"
                ]
                metrics[f"{name}/{model}/prior_weight"] = row["prior_weight"]
        ratio = entry["targets"].get("ratio_to_best_baseline")
        metrics[f"{name}/ratio_to_best_baseline"] = ratio
        metrics[f"{name}/ratio_without_prior"] = entry["targets"].get("ratio_without_prior")
        metrics[f"{name}/served_vs_best_baseline"] = entry["targets"].get("served_vs_best_baseline")
        if entry.get("mlm"):
            metrics[f"{name}/mlm_perplexity_before"] = entry["mlm"]["perplexity_before"]
            metrics[f"{name}/mlm_perplexity_after"] = entry["mlm"]["perplexity_after"]
        for variant, row in entry["rows"].items():
            for seed, ndcg in row.get("per_seed", {}).items():
                metrics[f"{name}/{variant.replace('+', '_')}/seed_{seed}/ndcg_at_10"] = ndcg
    params = {
        "benchmark": "quality",
        "protocol": results["protocol"],
        "datasets": ",".join(results["datasets"]),
        "seeds": ",".join(map(str, results["seeds"])),
    }
    if results["protocol"] == "temporal":
        params |= {"windows": results["windows"], "targets": results["targets"]}
    return registry.log_benchmark(
        report_stem(results["protocol"]),
        params,
        metrics,
        paths,
        config,
        get_home(home),
        tags={"benchmark": "quality", "machine": results["machine"]},
    )


def _mlm_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The MLM figures the report shows (perplexities on the same held-out texts and masks)."""
    if report is None:
        return None
    keys = (
        "perplexity_untrained_head",
        "perplexity_before",
        "perplexity_after",
        "head_warmup_steps",
        "head_warmup_seconds",
        "steps",
        "seconds",
        "total_seconds",
        "n_train_texts",
        "n_eval_texts",
        "fingerprint",
    )
    return {key: report[key] for key in keys}


def _ratio(value: float, best: float) -> float:
    return value / best if best > 0 else float("inf")


def _targets(rows: dict[str, Any], protocol: str = "loo") -> dict[str, Any]:
    """The issue's targets: text+ID at least 1.2x the best baseline (``loo``) or above every
    baseline (``temporal``); text+ID >= ID-only; training within 10 minutes; and what is served
    in text+ID's place (the gate's pick on validation) at least 1.05x the best baseline."""
    names = [b for b in BASELINE_NAMES if b in rows]
    best_name = max(names, key=lambda b: rows[b]["test"]["ndcg_at_10"])
    best = rows[best_name]["test"]["ndcg_at_10"]
    out: dict[str, Any] = {"best_baseline": best_name, "best_baseline_ndcg_at_10": best}
    if "text+id" in rows:
        model = rows["text+id"]["test"]["ndcg_at_10"]
        out["ratio_to_best_baseline"] = _ratio(model, best)
        if "test_no_prior" in rows["text+id"]:
            plain = rows["text+id"]["test_no_prior"]["ndcg_at_10"]
            out["ratio_without_prior"] = _ratio(plain, best)
        if "served" in rows["text+id"]:
            served = _ratio(rows["text+id"]["served"]["test"]["ndcg_at_10"], best)
            out["served_vs_best_baseline"] = served
            out["served_1_05x"] = served >= 1.05
        if protocol == "loo":
            out["beats_1_2x_baseline"] = model >= 1.2 * best
        else:
            out["beats_every_baseline"] = model > best
        seconds = rows["text+id"].get("train_seconds_max", rows["text+id"]["train_seconds"])
        out["under_10_minutes"] = seconds <= 600
        if "id" in rows:
            out["text_id_at_least_id"] = model >= rows["id"]["test"]["ndcg_at_10"]
    return out


def to_markdown(results: dict[str, Any]) -> str:
    """The report: one table per dataset (test split), training seconds, targets."""
    protocol = results["protocol"]
    stem = report_stem(protocol)
    if protocol == "loo":
        title = "leave-one-out"
        split = (
            "Last event per user = test, the one before = validation (early stopping), the rest "
            "= training. Recent popularity counts the last 10 % of the time span of the events "
            "it is fitted on."
        )
    else:
        title = f"temporal, the last of {results['windows']} windows"
        cases = (
            "every event there with a history, everything the user did before it as history"
            if results["targets"] == "all"
            else "each active user's first event there, their events before it as history"
        )
        split = (
            f"Events cut by time into a base period ({results['base_fraction']:.0%} of the "
            f"events) and {results['windows']} windows: the last window = test ({cases}), the "
            "window before it = validation (early stopping, the same construction), every "
            "earlier event = training. Recent popularity counts the last window of the events "
            "it is fitted on (for the test: the validation window)."
        )
    lines = [
        f"# Model quality ({title})",
        "",
        f"{split} Full ranking over the catalogue, history excluded, pessimistic ties. "
        "Baselines are fitted on training + validation events for the test; a model's test "
        "NDCG is that of a refit on the same events for the epochs validation chose (the "
        "early-stopped model trained without the validation events: 'train-only'). "
        "text+id and text embed items with the text encoder MLM-pretrained on the dataset's "
        "cleaned catalogue text; text+id-no-mlm (the ablation) with the shipped base encoder. "
        "'served': what the product would serve in a model's place -- the gate "
        "(recloop.gate.choose_champion, no champion) picks the model or a baseline on the "
        "validation cases -- with the pick's test NDCG@10 (the baseline named when it wins) and "
        "its ratio to the best baseline's. "
        f"{_seeds_text(results)}; machine: {results['machine']}.",
        "",
        f"![test NDCG@10 per dataset]({stem}-ndcg.png)",
        f"![training seconds per dataset]({stem}-seconds.png)",
        "",
    ]
    for name, entry in results["datasets"].items():
        summary = entry["summary"]
        lines += [
            f"## {name}",
            "",
            f"{summary['users']} users, {summary['items']} items, "
            f"{summary['interactions']} events; {entry['n_test_cases']} test cases"
            + (
                ""
                if protocol == "loo"
                else f" ({entry['split']['validation_cases']} validation cases, "
                f"{entry['split']['train_events']} training events, "
                f"{entry['split']['train_full_events']} with the validation window)"
            )
            + ".",
            "",
            *_mlm_lines(entry.get("mlm")),
            "| model | NDCG@10 | served NDCG@10 | served / best baseline | Recall@10 | NDCG@20 "
            "| Recall@20 | NDCG@10 without prior | prior weight | NDCG@10 train-only "
            "| val NDCG@10 | train s | refit s | best/run epochs |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        best = entry["targets"]["best_baseline_ndcg_at_10"]
        for model, row in entry["rows"].items():
            test, val = row["test"], row["validation"]
            only = row.get("test_train_only", {}).get("ndcg_at_10")
            plain = row.get("test_no_prior", {}).get("ndcg_at_10")
            weight = row.get("prior_weight")
            epochs = f"{row['best_epoch']}/{row['epochs']}" if "epochs" in row else ""
            served = row.get("served")
            lines.append(
                f"| {model} | {test['ndcg_at_10']:.4f} | {_served_cell(served)} | "
                f"{'' if served is None else _ratio_text(served['test']['ndcg_at_10'], best)} | "
                f"{test['recall_at_10']:.4f} | "
                f"{test.get('ndcg_at_20', float('nan')):.4f} | "
                f"{test.get('recall_at_20', float('nan')):.4f} | "
                f"{'' if plain is None else f'{plain:.4f}'} | "
                f"{'' if weight is None else f'{weight:.2f}'} | "
                f"{'' if only is None else f'{only:.4f}'} | {val['ndcg_at_10']:.4f} | "
                f"{row.get('train_seconds', '')} | {row.get('refit_seconds', '')} | {epochs} |"
            )
        lines += _seed_lines(entry)
        targets = entry["targets"]
        if "ratio_to_best_baseline" in targets:
            goal, met = (
                ("1.2x", targets["beats_1_2x_baseline"])
                if protocol == "loo"
                else ("above every baseline", targets["beats_every_baseline"])
            )
            lines += [
                "",
                f"text+ID / best baseline ({targets['best_baseline']}): "
                f"{targets['ratio_to_best_baseline']:.2f}x (target {goal}: "
                f"{'met' if met else 'NOT met'}"
                + (
                    f"; without its priors {targets['ratio_without_prior']:.2f}x"
                    if "ratio_without_prior" in targets
                    else ""
                )
                + "); text+ID >= ID-only: "
                f"{_yes(targets.get('text_id_at_least_id'))}; training <= 10 min: "
                f"{_yes(targets['under_10_minutes'])}.",
            ]
        if "served_vs_best_baseline" in targets:
            lines += [
                "",
                f"Served in text+ID's place ({_winner_text(entry['rows']['text+id']['served'])}) "
                f"/ best baseline ({targets['best_baseline']}): "
                f"{targets['served_vs_best_baseline']:.2f}x (target 1.05x: "
                f"{'met' if targets['served_1_05x'] else 'NOT met'}).",
            ]
        rows = entry["rows"]
        if "text+id" in rows and "text+id-no-mlm" in rows:
            with_mlm = rows["text+id"]["test"]["ndcg_at_10"]
            without = rows["text+id-no-mlm"]["test"]["ndcg_at_10"]
            lines += [
                "",
                f"MLM ablation: text+ID NDCG@10 {with_mlm:.4f} with the MLM-pretrained encoder, "
                f"{without:.4f} with the base encoder ({with_mlm - without:+.4f}).",
            ]
        lines += _search_lines(rows)
        lines.append("")
    return "\n".join(lines)


def _search_lines(rows: dict[str, Any]) -> list[str]:
    """What the settings search (``train.search``) of each model's training kept, and by what."""
    out = []
    for name, row in rows.items():
        search = row.get("search") if isinstance(row, dict) else None
        if not search:
            continue
        scores = ", ".join(
            f"{setting} {value:.4f}"
            + (f" (z {search['z'][setting]:+.2f})" if setting in search["z"] else "")
            for setting, value in search["mean_ndcg"].items()
        )
        out.append(f"- {name}: kept {search['chosen']} (validation NDCG@10 {scores})")
    if out:
        out = ["", "Settings search (an alternative is kept at z >= 2):", "", *out]
    return out


def _ratio_text(value: float, best: float) -> str:
    return f"{value / best:.2f}x" if best > 0 else "n/a"


def _served_cell(served: dict[str, Any] | None) -> str:
    """The served test NDCG@10, naming the baseline that serves (one seed) or counting the seeds
    a baseline served (the mean over several)."""
    if served is None:
        return ""
    ndcg = f"{served['test']['ndcg_at_10']:.4f}"
    if "winners" in served:
        k, n = served["baseline_seeds"], len(served["winners"])
        return ndcg + (f" (a baseline in {k}/{n} seeds)" if k else "")
    return ndcg if served["winner"] == CANDIDATE else f"{ndcg} ({served['winner']})"


def _winner_text(served: dict[str, Any]) -> str:
    """Who serves in words: the model, a named baseline, or how many seeds a baseline served."""
    if "winners" in served:
        k, n = served["baseline_seeds"], len(served["winners"])
        baselines = sorted({w for w in served["winners"].values() if w != CANDIDATE})
        return f"the model in {n - k} of {n} seeds" + (
            f", {' / '.join(baselines)} in {k}" if k else ""
        )
    return "the model" if served["winner"] == CANDIDATE else served["winner"]


def _seeds_text(results: dict[str, Any]) -> str:
    seeds = results.get("seeds", [results["seed"]])
    if len(seeds) == 1:
        return f"Seed {seeds[0]}"
    return (
        f"Seeds {', '.join(map(str, seeds))} (each drives the MLM pretraining, the models' "
        "initialisation and batch order): a model's row is the mean over the seeds, the "
        "targets are judged on it (training time: the longest training), and every seed's "
        "NDCG@10 is in the table under it"
    )


def _seed_lines(entry: dict[str, Any]) -> list[str]:
    """With several seeds: every model's test NDCG@10 per seed, its mean and standard
    deviation, what is served in its place per seed (the baseline named when one wins), the
    baselines beside them (the same every seed), and each seed's MLM perplexity after
    pretraining."""
    if "per_seed" not in entry:
        return []
    seeds = list(entry["per_seed"])
    rows = entry["rows"]
    models = [m for m, row in rows.items() if "per_seed" in row]
    lines = [
        "",
        "Test NDCG@10 per seed:",
        "",
        "| model | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean | std |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]

    def line(name: str, cells: list[str], values: list[float]) -> str:
        return (
            f"| {name} | " + " | ".join(cells) + f" | {np.mean(values):.4f} | "
            f"{np.std(values):.4f} |"
        )

    for model in models:
        values = [rows[model]["per_seed"][seed] for seed in seeds]
        lines.append(line(model, [f"{v:.4f}" for v in values], values))
        served = [entry["per_seed"][seed]["rows"][model].get("served") for seed in seeds]
        if all(served):
            values = [s["test"]["ndcg_at_10"] for s in served]
            lines.append(line(f"{model} served", [_served_cell(s) for s in served], values))
    for baseline in (b for b in BASELINE_NAMES if b in rows):
        values = [rows[baseline]["test"]["ndcg_at_10"]] * len(seeds)
        lines.append(line(baseline, [f"{v:.4f}" for v in values], values))
    perplexities = {
        seed: run["mlm"]["perplexity_after"]
        for seed, run in entry["per_seed"].items()
        if run["mlm"] is not None
    }
    if perplexities:
        lines += [
            "",
            "MLM held-out perplexity after pretraining, per seed: "
            + ", ".join(f"{value:.1f} (seed {seed})" for seed, value in perplexities.items())
            + ".",
        ]
    return lines


def _mlm_lines(mlm: dict[str, Any] | None) -> list[str]:
    """One paragraph: the encoder's held-out MLM perplexity before and after pretraining."""
    if mlm is None:
        return ["Text encoder: the shipped base encoder (no MLM pretraining run).", ""]
    return [
        f"MLM pretraining of the text encoder on {mlm['n_train_texts']} catalogue texts: "
        f"held-out perplexity ({mlm['n_eval_texts']} texts, same masks) "
        f"{mlm['perplexity_before']:.1f} before (base encoder, MLM head fitted in "
        f"{mlm['head_warmup_steps']} steps) -> {mlm['perplexity_after']:.1f} after "
        f"{mlm['steps']} adaptation steps; {mlm['total_seconds']:.0f} s in all "
        f"({mlm['head_warmup_seconds']:.0f} s head warm-up, {mlm['seconds']:.0f} s adaptation). "
        f"With the untrained (random) head: {mlm['perplexity_untrained_head']:.0f}.",
        "",
    ]


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def import_shared(
    src_root: Path, work_dir: Path, names: Sequence[str] | None = None
) -> dict[str, Path]:
    """Import the shared datasets found under ``src_root`` (all of them, or ``names``) into
    canonical folders under ``work_dir``; an import already there is reused."""
    from recloop.importers import import_dataset

    unknown = sorted(set(names or ()) - set(SHARED_DATASETS))
    if unknown:
        raise KeyError(f"unknown shared dataset(s) {', '.join(unknown)}")
    out: dict[str, Path] = {}
    for name, fmt in SHARED_DATASETS.items():
        if names is not None and name not in names:
            continue
        src = src_root / name
        if not src.exists():
            logger.warning("%s: not found, skipped", src)
            continue
        dest = work_dir / name
        if not (dest / "interactions.parquet").exists():
            import_dataset(fmt, src, dest)
        out[name] = dest
    return out


def bench_quality(
    *,
    shared: Path = Path("../shared/datasets"),
    data: Sequence[str] = (),
    config: Path | None = None,
    out: Path = Path("reports"),
    work: Path = Path("reports/tmp/quality"),
    variants: Sequence[str] = VARIANTS,
    protocol: str = "loo",
    windows: int = 4,
    targets: str = "all",
    seeds: Sequence[int] = (),
    home: Path | None = None,
    log_mlflow: bool = True,
) -> dict[str, Any]:
    """``recloop bench quality``: the ``data`` datasets (``NAME=CANONICAL_DIR``), else every
    shared dataset imported from ``shared`` into ``work``; see :func:`run_quality`."""
    cfg = load_config(config)
    if data:
        datasets = {k: Path(v) for k, v in (item.split("=", 1) for item in data)}
    else:
        datasets = import_shared(shared, work / "data")
    started = time.perf_counter()
    results = run_quality(
        datasets,
        cfg,
        out,
        variants=tuple(variants),
        cache_dir=work / "embeddings",
        encoder_dir=work / "encoders",
        log_mlflow=log_mlflow,
        home=home,
        protocol=protocol,
        windows=windows,
        targets=targets,
        seeds=tuple(seeds),
    )
    logger.info("quality benchmark done in %.0fs", time.perf_counter() - started)
    return results
