"""The trainer: models found by name (bonmf, nmf, svd) trained from the store's splits.

Public names (what the pipeline and evaluation may use; everything else is internal):
``train`` and its ``TrainSettings`` / ``RunResult``, ``distributed_session`` / ``Dist`` (a torchrun
process group that several runs share), ``load_scorer`` / ``Scorer``, the splits,
the model registry, and the run-folder readers re-exported from ``featurestore.runs``.
"""

from bonmf_pipe.featurestore.runs import label, list_runs, new_run_id, read_run_config, run_dir
from bonmf_pipe.trainer.distributed import Dist, session as distributed_session
from bonmf_pipe.trainer.models import create_model, model_names, model_settings, register_model
from bonmf_pipe.trainer.runs import RunResult
from bonmf_pipe.trainer.scorer import Scorer, load_scorer
from bonmf_pipe.trainer.settings import FEATURES, MODELS, TrainSettings
from bonmf_pipe.trainer.splits import make_split, split_dataset
from bonmf_pipe.trainer.train import EpochHook, lr_at, train

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
