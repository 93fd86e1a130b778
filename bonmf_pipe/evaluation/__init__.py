"""Evaluation: rating and ranking metrics of trained runs, ablations, recommendations."""

from bonmf_pipe.evaluation.ablate import AblateSettings, AblationResult, ablate
from bonmf_pipe.evaluation.evaluate import EvalReport, EvalSettings, evaluate_run, resolve_run_id
from bonmf_pipe.evaluation.recommend import recommend

__all__ = [
    "AblateSettings",
    "AblationResult",
    "EvalReport",
    "EvalSettings",
    "ablate",
    "evaluate_run",
    "recommend",
    "resolve_run_id",
]
