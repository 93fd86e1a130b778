"""A name -> model registry in the style of timm's ``register_model`` / ``create_model``.

Each model family lives in one module of this package, declares a small config dataclass
of its own (built from ``TrainSettings`` by its ``from_settings`` classmethod; its field
names are the training settings the model reads), the settings it forces (``overrides``:
e.g. svd uses no side information) and registers itself by name. Adding a
model is one new file here; nothing else in the project asks which model it is.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from bonmf_pipe.errors import ConfigError

# Side inputs of a model: modality -> (item matrix [n_items + 1, dim], has-vector flags).
Sides = dict[str, tuple[torch.Tensor, torch.Tensor]]


class RatingModel(Protocol):
    """What the trainer and the scorer need from a model (every registered model is an
    ``nn.Module`` with these methods)."""

    def forward(self, users: torch.Tensor, items: torch.Tensor, item_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions and the per-row L2 penalty of what the rows looked up."""

    def configure_optimizers(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        """The optimiser with the model's own parameter groups."""

    def user_parts(self, users: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def item_parts(self, items: torch.Tensor, item_pos: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def combine(self, up: dict[str, torch.Tensor], ip: dict[str, torch.Tensor], grid: bool) -> torch.Tensor: ...


@dataclass(frozen=True)
class ModelEntry:
    name: str
    build: Callable[..., nn.Module]  # build(config, n_users=, n_items=, sides=, mean=)
    config: type  # the model's config dataclass, with a from_settings(TrainSettings) classmethod
    overrides: Callable[[Any], dict[str, Any]]  # TrainSettings -> fields the model forces
    summary: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, *, config: type, overrides: Callable[[Any], dict[str, Any]] | None = None, summary: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model class (or factory) under ``name`` with its config dataclass."""

    def decorate(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        if not (dataclasses.is_dataclass(config) and hasattr(config, "from_settings")):
            raise TypeError(f"model {name!r}: config must be a dataclass with a from_settings classmethod")
        _REGISTRY[name] = ModelEntry(name, build, config, overrides or (lambda s: {}), summary)
        return build

    return decorate


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
    return model_entry(name).build(config, n_users=n_users, n_items=n_items, sides=sides, mean=mean)


def build_model(settings: Any, n_users: int, n_items: int, sides: Sides, mean: float) -> nn.Module:
    """``create_model`` for (effective) training settings: the model ``settings.model`` with
    the config it builds from them."""
    return create_model(
        settings.model, model_config(settings.model, settings), n_users=n_users, n_items=n_items, sides=sides, mean=mean
    )
