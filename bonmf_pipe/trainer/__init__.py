"""The trainer: BoNMF, NMF and biased-MF (svd) models trained from the store's splits."""

from bonmf_pipe.trainer.runs import RunResult, list_runs, read_run_config, run_dir
from bonmf_pipe.trainer.scorer import Scorer, load_scorer
from bonmf_pipe.trainer.settings import TrainSettings
from bonmf_pipe.trainer.splits import make_split, split_dataset
from bonmf_pipe.trainer.train import train

__all__ = [
    "RunResult",
    "Scorer",
    "TrainSettings",
    "list_runs",
    "load_scorer",
    "make_split",
    "read_run_config",
    "run_dir",
    "split_dataset",
    "train",
]
