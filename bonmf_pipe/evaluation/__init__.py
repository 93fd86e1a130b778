"""Evaluation: rating and ranking metrics of trained runs, recommendations.

``EvalSettings`` imports nothing heavy (the CLI builds its options from it); the rest loads
the scorer, hence torch, and is imported the first time it is used (PEP 562,
``bonmf_pipe.lazy``).
"""

from bonmf_pipe import lazy
from bonmf_pipe.evaluation.settings import EvalSettings

__all__ = [
    "EvalReport",
    "EvalSettings",
    "evaluate_run",
    "recommend",
    "resolve_run_id",
]

__getattr__, __dir__ = lazy.exports(
    __name__,
    {"EvalReport": "evaluate", "evaluate_run": "evaluate", "resolve_run_id": "evaluate", "recommend": "recommend"},
)
