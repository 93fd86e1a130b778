"""The model registry: every model by name, its own config, its optimiser groups, and
scoring in parts that matches the forward pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.trainer import TrainSettings, create_model, model_names, model_settings, register_model
from bonmf_pipe.trainer.models import BiasedMF, BoNMF, BoNMFConfig, SVDConfig, build_model, model_config


def _sides(n_items: int = 7) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    found = torch.tensor([True, False, True, True, False, True, True, False])[: n_items + 1]
    return {
        "text": (torch.randn(n_items + 1, 6, generator=g) * found.unsqueeze(1), found),
        "image": (torch.randn(n_items + 1, 4, generator=g) * found.unsqueeze(1), found),
    }


def _build(name: str, **changes):
    s = TrainSettings(model=name, **changes).effective()
    sides = {m: v for m, v in _sides().items() if m in s.features}
    return s, build_model(s, 5, 8, sides, 3.5)


def test_every_model_is_registered_with_its_own_config():
    assert set(model_names()) >= {"bonmf", "nmf", "svd"}
    assert isinstance(model_config("bonmf", TrainSettings().effective()), BoNMFConfig)
    assert model_config("svd", TrainSettings(model="svd").effective()) == SVDConfig(embedding_dim=50)
    s, model = _build("svd")
    assert isinstance(model, BiasedMF) and s.features == () and s.biases and s.dot
    s, model = _build("nmf")
    assert isinstance(model, BoNMF) and s.features == () and len(model.sides) == 0
    s, model = _build("bonmf")
    assert isinstance(model, BoNMF) and set(model.sides) == {"text", "image"}
    # the settings each model reads are its config's fields
    assert model_settings("svd") == {"embedding_dim"}
    assert {"dropout", "hidden", "projection_dim", "side_lr_scale"} <= model_settings("bonmf") == model_settings("nmf")


def test_unknown_and_duplicate_models_are_refused():
    with pytest.raises(ConfigError, match="--model 'lightgcn' is not one of bonmf, nmf, svd"):
        TrainSettings(model="lightgcn")
    with pytest.raises(ConfigError, match="--model 'lightgcn'"):
        create_model("lightgcn", None, n_users=2, n_items=2, sides={}, mean=3.0)
    with pytest.raises(TypeError, match="from_settings"):
        register_model("mf2", config=dict)(BiasedMF)
    with pytest.raises(ValueError, match="registered twice"):
        register_model("svd", config=SVDConfig)(BiasedMF)


@pytest.mark.parametrize("name", ["bonmf", "nmf", "svd"])
def test_the_model_owns_its_optimiser_groups(name):
    s, model = _build(name, weight_decay=0.01, side_weight_decay=0.1, side_lr_scale=0.5)
    opt = model.configure_optimizers(lr=s.lr, weight_decay=s.weight_decay)
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter exactly once
    assert all(g["fused"] for g in opt.param_groups)  # one fused AdamW kernel per step on the CPU (and on CUDA)
    embeddings = opt.param_groups[0]
    assert embeddings["weight_decay"] == 0.0  # IDs are regularised by the loss's L2 term instead
    assert {id(p) for p in embeddings["params"]} >= {id(model.user.weight), id(model.item.weight)}
    if name == "bonmf":
        side = opt.param_groups[1]
        assert side["weight_decay"] == 0.1 and side["lr"] == pytest.approx(s.lr * 0.5)
        assert {id(p) for p in side["params"]} == {id(p) for p in model.sides.parameters()}


@pytest.mark.parametrize("name,changes", [("bonmf", {}), ("bonmf", {"paper": True}), ("nmf", {}), ("svd", {})])
def test_scoring_in_parts_equals_the_forward_pass(name, changes):
    torch.manual_seed(1)
    s, model = _build(name, **changes)
    with torch.no_grad():  # non-zero weights everywhere, so every term counts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    users = torch.tensor([0, 1, 2, 3, 4, 1])
    items = torch.tensor([0, 1, 2, 3, 7, 5])
    pos = torch.tensor([7, 0, 1, 2, 6, 4])
    pred, penalty = model(users, items, pos)
    assert pred.shape == penalty.shape == (6,) and (penalty >= 0).all()
    pairs = model.combine(model.user_parts(users), model.item_parts(items, pos), grid=False)
    torch.testing.assert_close(pairs, pred, atol=1e-5, rtol=1e-5)
    grid = model.combine(model.user_parts(users[:2]), model.item_parts(items, pos), grid=True)
    assert grid.shape == (2, 6)
    torch.testing.assert_close(grid[1], model(users[1].repeat(6), items, pos)[0], atol=1e-5, rtol=1e-5)


def test_the_paper_network_is_exactly_the_paper_s():
    s, model = _build("bonmf", paper=True)
    assert (s.projection_dim, s.biases, s.dot, s.dropout, s.l2, s.epochs) == (0, False, False, 0.0, 0.0, 10)
    linear = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    # user (50) + item (50) + raw text (6) + raw image (4) -> 128 -> 64 -> 1
    assert [(m.in_features, m.out_features) for m in linear] == [(110, 128), (128, 64), (64, 1)]
    assert model.global_bias is None and not any(isinstance(m, torch.nn.Dropout) for m in model.mlp)
    assert dataclasses.replace(model.config, dropout=0.0) == model.config
