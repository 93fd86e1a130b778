"""A name -> model registry in the style of timm's ``register_model`` / ``create_model``.

Each model family declares a small config dataclass of its own (built from ``TrainSettings``
by its ``from_settings`` classmethod; its field names are the training settings the model
reads), the settings it forces (``overrides``: e.g. svd uses no side information) and its
default (batch_size, lr), and registers itself by name. Nothing else in the project asks
which model it is.

This module imports no torch: the settings and the CLI read names, overrides and defaults
from it. The built-in models are declared in ``catalog.py`` (torch-free) with the path of
their network class (``bonmf.py``, ``svd.py``), which is imported when a model is created;
``register_model`` registers a class directly (a model of one's own, in one new file).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bonmf_pipe.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from bonmf_pipe.trainer.models.base import Sides

# The default (batch_size, lr) of a CPU run unless a model registers its own, each pair measured
# together: the lr with the best mean valid RMSE over 3 seeds at that batch size on ml-latest-small
# (benchmarks/results/train-batch-lr-cpu2.json). On CUDA the batch grows with the data, by
# powers of two up to GPU_MAX_BATCH while every epoch keeps MIN_STEPS_PER_EPOCH steps, and the lr
# with the square root of the batch (Adam's rule); on small data a GPU run is the CPU run.
DEFAULT_BATCH_LR = (2048, 2e-3)
GPU_MAX_BATCH = 32768
MIN_STEPS_PER_EPOCH = 32


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module] | str  # build(config, n_users=, n_items=, sides=, mean=), or "module:name" of it
    config: type  # the model's config dataclass, with a from_settings(TrainSettings) classmethod
    overrides: Callable[[Any], dict[str, Any]]  # TrainSettings -> fields the model forces
    summary: str
    batch_lr: tuple[int, float]  # the default (batch_size, lr) on the CPU

    def factory(self) -> Callable[..., nn.Module]:
        """The model class (or factory), imported from its module when declared by path."""
        if callable(self.build):
            return self.build
        module, _, attr = self.build.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, config: type, overrides: Callable[[Any], dict[str, Any]] | None = None, summary: str = "",
    batch_lr: tuple[int, float] = DEFAULT_BATCH_LR,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model class (or factory) under ``name`` with its config dataclass
    and its default (batch_size, lr) on the CPU (``model_batch_lr`` derives the GPU's)."""

    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        declare_model(name, build, config=config, overrides=overrides, summary=summary, batch_lr=batch_lr)
        return build

    return decorate


def declare_model(
    name: str, build: Callable[..., nn.Module] | str, *, config: type,
    overrides: Callable[[Any], dict[str, Any]] | None = None, summary: str = "", batch_lr: tuple[int, float] = DEFAULT_BATCH_LR,
) -> None:
    """Register model ``name`` like ``register_model``, its class named by ``"module:name"`` so that
    the module (and torch) is imported only when a model is created: the settings, the CLI and
    ``model_names`` need only the name, the config dataclass, the overrides and the defaults."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered twice")
    if not (dataclasses.is_dataclass(config) and hasattr(config, "from_settings")):
        raise TypeError(f"model {name!r}: config must be a dataclass with a from_settings classmethod")
    _REGISTRY[name] = ModelEntry(name, build, config, overrides or (lambda s: {}), summary, batch_lr)


def model_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"--model {name!r} is not one of {', '.join(_REGISTRY)}.") from None


def model_overrides(name: str, settings: Any) -> dict[str, Any]:
    """The settings model ``name`` forces (applied by ``TrainSettings.effective``)."""
    return model_entry(name).overrides(settings)


def model_batch_lr(name: str, device_type: str, n_train: int | None = None) -> tuple[int, float]:
    """Model ``name``'s default (batch_size, lr) on a device of type ``device_type`` for a split
    of ``n_train`` training ratings (None = large). The CPU (and any device but cuda): the
    registered pair. CUDA: the largest power of two from the CPU batch up to ``GPU_MAX_BATCH``
    that leaves ``MIN_STEPS_PER_EPOCH`` steps an epoch, lr scaled by sqrt(batch / CPU batch)."""
    batch, lr = model_entry(name).batch_lr
    if device_type != "cuda":
        return batch, lr
    fit = GPU_MAX_BATCH if n_train is None else max(n_train // MIN_STEPS_PER_EPOCH, 1)
    large = batch
    while large * 2 <= min(fit, GPU_MAX_BATCH):
        large *= 2
    return large, lr * math.sqrt(large / batch)


def model_config(name: str, settings: Any) -> Any:
    """Model ``name``'s own config dataclass, built from (effective) training settings."""
    return model_entry(name).config.from_settings(settings)


def model_settings(name: str) -> frozenset[str]:
    """The training settings model ``name`` reads (its config's fields), e.g. to search only
    those: ``"dropout" in model_settings("svd")`` is False."""
    return frozenset(f.name for f in dataclasses.fields(model_entry(name).config))


def create_model(name: str, config: Any, *, n_users: int, n_items: int, sides: Sides, mean: float) -> nn.Module:
    """A new model ``name`` from its config: ``n_users`` / ``n_items`` ID embeddings (index
    0 = unknown), the item side matrices on their device, and the training rating mean."""
    return model_entry(name).factory()(config, n_users=n_users, n_items=n_items, sides=sides, mean=mean)


def build_model(settings: Any, n_users: int, n_items: int, sides: Sides, mean: float) -> nn.Module:
    """``create_model`` for (effective) training settings: the model ``settings.model`` with
    the config it builds from them."""
    return create_model(
        settings.model, model_config(settings.model, settings), n_users=n_users, n_items=n_items, sides=sides, mean=mean
    )
