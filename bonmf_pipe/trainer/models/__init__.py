"""The models the trainer can fit, found by name (``create_model("bonmf", config, ...)``).

Importing this package registers every model family: ``bonmf`` and ``nmf``
(models/bonmf.py) and ``svd`` (models/svd.py).
"""

from bonmf_pipe.trainer.models import bonmf, svd  # noqa: F401  (registers the models)
from bonmf_pipe.trainer.models.bonmf import BoNMF, BoNMFConfig
from bonmf_pipe.trainer.models.registry import (
    RatingModel,
    Sides,
    adamw,
    build_model,
    create_model,
    model_batch_lr,
    model_config,
    model_entry,
    model_names,
    model_overrides,
    model_settings,
    register_model,
)
from bonmf_pipe.trainer.models.svd import BiasedMF, SVDConfig

__all__ = [
    "BiasedMF",
    "BoNMF",
    "BoNMFConfig",
    "RatingModel",
    "SVDConfig",
    "Sides",
    "adamw",
    "build_model",
    "create_model",
    "model_batch_lr",
    "model_config",
    "model_entry",
    "model_names",
    "model_overrides",
    "model_settings",
    "register_model",
]
