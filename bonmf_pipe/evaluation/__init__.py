"""Evaluation: rating and ranking metrics of trained runs, recommendations."""

from bonmf_pipe.evaluation.evaluate import EvalReport, EvalSettings, evaluate_run, resolve_run_id
from bonmf_pipe.evaluation.recommend import recommend

__all__ = [
    "EvalReport",
    "EvalSettings",
    "evaluate_run",
    "recommend",
    "resolve_run_id",
]
