"""The ``feedback-loop`` flow: one incremental cycle of the loop (docs/interfaces.md).

validate → prepare → clean_text → pretrain → fine_tune → evaluate → promote. The flow only composes
tasks; every stage is a plain function in ``tasks/`` that is tested on its own.

Concurrency: the cycle runs under the home's training lock (:func:`recloop.orchestration.
training_lock`), so runs started together (several batches landing at once, a schedule, a manual
update) train and promote one after another. A run started for one landed batch (``batch_id``)
gives each pending batch up to that one its own candidate, in landing order (see
:func:`tasks.prepare.plan_batches`); a run without one learns everything pending at once.

Runs are named ``incremental · batch <id>`` (``· N batches``), then with the outcome
(``· v4 promoted``), and tagged ``recloop``, ``home:<folder>``, ``training:incremental``,
``batch:<id>`` and ``version:<n>`` (see :func:`recloop.orchestration.run_tags`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.cycle import train_evaluate_promote
from recloop.config import load_config
from recloop.orchestration import label_flow_run, outcome_of, run_name, run_tags, training_lock
from recloop.paths import get_home
from tasks.prepare import judged_task, load_champion_task, plan_task, prepare_task
from tasks.promote import finish_promotion_task
from tasks.validate import land_task

TRAINING = "incremental"  # the ``training`` tag and metadata value of the versions it registers


def _run_name() -> str:
    """The run's name from its parameters, before it has landed or planned anything."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters or {}
    if parameters.get("batch_id"):
        return run_name(TRAINING, [parameters["batch_id"]])
    files = parameters.get("batch_files")
    return run_name(TRAINING, len(files) if files else None)


def _label_outcome(home: Any, summary: dict[str, Any], batch_id: str | None) -> None:
    """Name and tag the run with the batches it landed and learned, and the versions it made."""
    cycles = summary.get("cycles") or [summary]
    learned = [batch for cycle in cycles for batch in cycle.get("batches", [])]
    landed = [entry["batch_id"] for entry in summary.get("landed", [])]
    batches = list(dict.fromkeys(landed + learned))
    named = [batch_id] if batch_id else list(dict.fromkeys(learned or landed))
    tags = run_tags(home, TRAINING, batches)
    tags += [f"version:{cycle['version']}" for cycle in cycles if cycle.get("version")]
    label_flow_run(run_name(TRAINING, named, outcome_of(summary)), tags)


def _trained(champion: tuple[Any, dict[str, Any]] | None) -> list[str]:
    """The batches the champion was trained on (its lineage), none before the first version."""
    return list(champion[0].metadata.get("trained_batches", [])) if champion else []


def _learn_pending(config: Any, home: Any, cycle: Any) -> dict[str, Any]:
    """One candidate on every pending batch (the scheduled run, ``recloop update``), unless this
    champion has already judged exactly those batches."""
    champion = load_champion_task(config, home)
    data = prepare_task(home, _trained(champion))
    if data is None:
        get_run_logger().info("No batch pending since the champion was trained: nothing to learn.")
        return {"status": "up-to-date"}
    judged = judged_task(config, home, champion[1] if champion else None, data.pending)
    if judged is None:
        return cycle(champion, data)
    # The same batches, the same champion: the same judgement (e.g. a concurrent run, or a
    # rerun after the gate kept the champion). The next batch reopens them.
    reason = (
        f"batches {','.join(data.pending)} were already judged against this champion by "
        f"version {judged['version']} ({judged['tags'].get('reason', 'gate failed')})"
    )
    get_run_logger().info("Nothing to learn: %s.", reason)
    return {"status": "up-to-date", "reason": reason, "batches": data.pending}


@flow(name="feedback-loop", flow_run_name=_run_name, log_prints=False)
def feedback_loop(
    batch_files: list[str] | None = None,
    items_files: list[str | None] | None = None,
    home: str | None = None,
    config_path: str | None = None,
    force_pretrain: bool = False,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """Land the given batches (if any), then learn from the batches landed since the champion.

    Args:
        batch_files: interactions files to validate and land first; None to consume what is
            already archived and pending (e.g. after ``recloop ingest``).
        items_files: items files matching ``batch_files`` one to one (None entries allowed).
        home: ``RECLOOP_HOME``; default from the environment.
        config_path: a YAML file overriding the default config.
        force_pretrain: run MLM pretraining even if the catalogue text has barely changed.
        batch_id: the landed batch this run was triggered for (event ``recloop.batch.landed``).
            Each pending batch up to it that no candidate of the current champion has been judged
            on yet gets one candidate, in landing order; ``up-to-date`` when there is none. None:
            one candidate on every pending batch (the scheduled run, ``recloop update``).

    Returns a summary: the landing results, the candidate version, the metrics of candidate,
    champion and baselines on the same held-out events, and the promotion decision (with
    ``batch_id``: those of the last candidate, and every candidate's under ``cycles``).
    """
    log = get_run_logger()
    started = time.perf_counter()
    config = load_config(config_path)
    recloop_home = get_home(home).ensure()
    label_flow_run(tags=run_tags(recloop_home, TRAINING))

    landed = []
    for index, path in enumerate(batch_files or []):
        items = (items_files or [None] * len(batch_files))[index]
        result = land_task(recloop_home, Path(path), Path(items) if items else None)
        landed.append(result.to_dict())
    summary: dict[str, Any] = {"landed": landed}

    def cycle(champion: tuple[Any, dict[str, Any]] | None, data: Any) -> dict[str, Any]:
        label_flow_run(
            run_name(TRAINING, [batch_id] if batch_id else data.pending),
            run_tags(recloop_home, TRAINING, data.pending),
        )
        return train_evaluate_promote(
            data,
            champion,
            recloop_home,
            config,
            training=TRAINING,
            warm_start=True,
            force_pretrain=force_pretrain,
        )

    with training_lock(recloop_home, f"feedback-loop ({batch_id or 'all pending'})"):
        # A cycle killed after registering a version that passed the gate: promote it now.
        finished = finish_promotion_task(config, recloop_home)
        if finished is not None:
            summary["finished_promotion"] = finished
        if batch_id is None:
            summary.update(_learn_pending(config, recloop_home, cycle))
        else:
            cycles: list[dict[str, Any]] = []
            decided: set[str] = set()
            while True:
                champion = load_champion_task(config, recloop_home)
                trained = _trained(champion)
                plan = plan_task(
                    config, recloop_home, champion[1] if champion else None, trained, batch_id
                )
                if plan.decides is None:
                    break
                if plan.decides in decided:  # the registry did not record the last decision
                    raise RuntimeError(f"batch {plan.decides} was planned twice in one run")
                decided.add(plan.decides)
                cycles.append(cycle(champion, prepare_task(recloop_home, trained, plan.batches)))
            if cycles:
                summary.update(cycles[-1])
            else:
                log.info("Nothing to learn for batch %s: %s.", batch_id, plan.reason)
                summary.update(status="up-to-date", reason=plan.reason)
            summary.update(batch_id=batch_id, cycles=cycles)
    _label_outcome(recloop_home, summary, batch_id)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary
