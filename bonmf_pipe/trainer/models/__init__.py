"""The models the trainer can fit, found by name (``create_model("bonmf", config, ...)``).

Importing this package declares every built-in model family (catalog.py): ``bonmf`` and
``nmf`` (the network of models/bonmf.py) and ``svd`` (models/svd.py), without importing
torch; the network classes, ``RatingModel``, ``Sides``, ``Optimizer`` and ``adamw`` are
imported (with torch) the first time they are asked for, or when a model is created.
"""

from bonmf_pipe import lazy
from bonmf_pipe.trainer.models.catalog import BoNMFConfig, SVDConfig
from bonmf_pipe.trainer.models.registry import (
    build_model,
    create_model,
    declare_model,
    model_batch_lr,
    model_config,
    model_entry,
    model_names,
    model_overrides,
    model_settings,
    register_model,
)

__all__ = [
    "BiasedMF",
    "BoNMF",
    "BoNMFConfig",
    "Optimizer",
    "RatingModel",
    "SVDConfig",
    "Sides",
    "adamw",
    "build_model",
    "create_model",
    "declare_model",
    "model_batch_lr",
    "model_config",
    "model_entry",
    "model_names",
    "model_overrides",
    "model_settings",
    "register_model",
]

__getattr__, __dir__ = lazy.exports(
    __name__, {"BoNMF": "bonmf", "BiasedMF": "svd", "RatingModel": "base", "Sides": "base", "adamw": "optim", "Optimizer": "base"}
)
