"""The ``train`` command's workflow: train one run, then evaluate it.

The trainer never calls evaluation (evaluation sits above it); this workflow chains the two,
as ``ablate`` and ``demo`` do, so ``bonmf-pipe train`` prints the run's full metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from bonmf_pipe.evaluation import EvalReport, EvalSettings, evaluate_run
from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.tune import load_params, record_params
from bonmf_pipe.progress import ProgressCallback
from bonmf_pipe.runtime import trim_heap, world
from bonmf_pipe.trainer import RunResult, TrainSettings, train


@dataclass(frozen=True)
class TrainedRun:
    """A finished run and its evaluation."""

    run: RunResult
    evaluation: EvalReport | None  # None on the ranks other than 0 under torchrun


def train_and_evaluate(
    store: Store,
    settings: TrainSettings,
    evaluation: EvalSettings | None = None,
    progress: ProgressCallback | None = None,
    *,
    resume: str | None = None,
    given: Collection[str] = (),
    params: str | None = None,
) -> TrainedRun:
    """Train ``settings`` (or continue run ``resume``), then evaluate the run.

    ``given`` names the settings the user set explicitly; with ``resume``, the trainer refuses
    those that contradict the run being continued. ``params`` (``best``, ``best:STUDY`` or a
    JSON file) sets hyper-parameters from a tuning study, except those in ``given``; the run
    records where they came from (``runs/<id>/params.json``). The evaluation's DuckDB memory
    stays within ``settings.memory_budget_mb``. Under torchrun, rank 0 alone records and
    evaluates.
    """
    given = frozenset(given)
    choice = None
    if params is not None:
        choice = load_params(store, params, settings)
        chosen = {k: v for k, v in choice.params.items() if k not in given}
        settings = dataclasses.replace(settings, **chosen)
        given = given | chosen.keys()
    run = train(store, settings, progress, resume=resume, given=given)
    trim_heap()  # what training freed leaves the process before the evaluation allocates its own
    if not world().is_main:
        return TrainedRun(run, None)
    if choice is not None:
        record_params(store, run.run_id, choice, overridden=choice.params.keys() - chosen.keys())
    evaluation = evaluation or EvalSettings()
    evaluation = dataclasses.replace(evaluation, memory_limit_mb=max(16, min(evaluation.memory_limit_mb, settings.memory_budget_mb)))
    return TrainedRun(run, evaluate_run(store, run.run_id, evaluation, progress))
