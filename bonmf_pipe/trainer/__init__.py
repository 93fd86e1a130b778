"""The trainer: models found by name (bonmf, nmf, svd) trained from the store's splits.

Public names (what the pipeline and evaluation may use; everything else is internal):
``train`` and its ``TrainSettings`` / ``RunResult``, ``distributed_session`` / ``Dist`` (a torchrun
process group that several runs share), ``load_scorer`` / ``Scorer``, the splits,
the model registry, and the run-folder readers re-exported from ``featurestore.runs``.

The settings, the registry and the run readers import no torch (the CLI builds its options
from ``TrainSettings`` without it); the names that need torch (``train``, ``Scorer``,
``distributed_session``, ...) are imported from their modules the first time they are used
(PEP 562, ``bonmf_pipe.lazy``).
"""

from bonmf_pipe import lazy
from bonmf_pipe.featurestore.runs import label, list_runs, new_run_id, read_run_config, run_dir
from bonmf_pipe.trainer.models import create_model, model_names, model_settings, register_model
from bonmf_pipe.trainer.settings import FEATURES, MODELS, TrainSettings

__all__ = [
    "FEATURES",
    "MODELS",
    "Dist",
    "EpochHook",
    "RunResult",
    "Scorer",
    "TrainSettings",
    "create_model",
    "distributed_session",
    "label",
    "list_runs",
    "load_scorer",
    "lr_at",
    "make_split",
    "model_names",
    "model_settings",
    "new_run_id",
    "read_run_config",
    "register_model",
    "run_dir",
    "split_dataset",
    "train",
]

__getattr__, __dir__ = lazy.exports(
    __name__,
    {
        "Dist": "distributed",
        "distributed_session": "distributed:session",
        "RunResult": "runs",
        "Scorer": "scorer",
        "load_scorer": "scorer",
        "make_split": "splits",
        "split_dataset": "splits",
        "EpochHook": "train",
        "lr_at": "train",
        "train": "train",
    },
)
