"""FusedAdamW: the bits of torch.optim.AdamW(fused=True), its state_dict layout, no torch._dynamo."""

import subprocess
import sys

import pytest
import torch

from bonmf_pipe.trainer.models import SVDConfig, create_model
from bonmf_pipe.trainer.models.optim import FusedAdamW, adamw


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("svd", SVDConfig(embedding_dim=8), n_users=50, n_items=40, sides={}, mean=3.5)


def _steps(model: torch.nn.Module, opt, n: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        users, items = torch.randint(0, 50, (64,), generator=g), torch.randint(0, 40, (64,), generator=g)
        ratings = torch.randint(1, 6, (64,), generator=g).float()
        pred, penalty = model(users, items, items)
        loss = (pred - ratings).pow(2).mean() + 0.01 * penalty.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _groups(model) -> list[dict]:
    return [{**g, "params": list(g["params"])} for g in model.configure_optimizers(lr=0.01, weight_decay=0.05).param_groups]


def test_same_bits_as_torch_fused_adamw():
    ours, theirs = _model(1), _model(1)
    opt_ours = FusedAdamW(_groups(ours), lr=0.01)
    opt_theirs = torch.optim.AdamW(_groups(theirs), lr=0.01, fused=True)
    _steps(ours, opt_ours, 20)
    _steps(theirs, opt_theirs, 20)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
    sd_ours, sd_theirs = opt_ours.state_dict(), opt_theirs.state_dict()
    assert sd_ours["param_groups"] == sd_theirs["param_groups"]
    assert sd_ours["state"].keys() == sd_theirs["state"].keys()
    for i, state in sd_theirs["state"].items():
        for key, value in state.items():
            assert torch.equal(sd_ours["state"][i][key], value), (i, key)
            assert sd_ours["state"][i][key].dtype == value.dtype


@pytest.mark.parametrize("source", ["torch", "ours"])
def test_resume_from_either_state_dict_continues_the_same_bits(source):
    """A checkpoint written by torch's AdamW (older runs) or by FusedAdamW resumes identically."""
    first = _model(2)
    opt = (torch.optim.AdamW(_groups(first), lr=0.01, fused=True) if source == "torch"
           else FusedAdamW(_groups(first), lr=0.01))
    _steps(first, opt, 5)
    saved_model = {k: v.clone() for k, v in first.state_dict().items()}
    sd = opt.state_dict()  # copied, as a checkpoint file holds it (state_dict shares the live tensors)
    saved_opt = {"state": {i: {k: v.clone() for k, v in st.items()} for i, st in sd["state"].items()},
                 "param_groups": [dict(g) for g in sd["param_groups"]]}
    _steps(first, opt, 5, seed=1)  # the uninterrupted run

    resumed = _model(3)
    resumed.load_state_dict(saved_model)
    opt2 = FusedAdamW(_groups(resumed), lr=0.5)  # lr, like every group setting, comes from the state
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["lr"] == 0.01
    _steps(resumed, opt2, 5, seed=1)
    for (name, a), b in zip(resumed.state_dict().items(), first.state_dict().values()):
        assert torch.equal(a, b), name


def test_mismatched_state_is_refused():
    model = _model(4)
    opt = FusedAdamW(_groups(model), lr=0.01)
    sd = opt.state_dict()
    sd["param_groups"][0]["params"] = sd["param_groups"][0]["params"][:-1]
    with pytest.raises(ValueError, match="groups of other sizes"):
        opt.load_state_dict(sd)


def test_frozen_parameters_get_no_state_and_do_not_move():
    model = _model(5)
    model.item.weight.requires_grad_(False)
    before = model.item.weight.clone()
    opt = adamw(_groups(model), lr=0.01)
    assert isinstance(opt, FusedAdamW)
    _steps(model, opt, 3)
    assert torch.equal(model.item.weight, before)
    assert model.item.weight not in opt.state


def test_training_step_does_not_import_dynamo():
    """The reason FusedAdamW exists: torch.optim would import torch._dynamo (~150 MB resident)."""
    code = (
        "import sys, torch\n"
        "from bonmf_pipe.trainer.models import SVDConfig, create_model\n"
        "m = create_model('svd', SVDConfig(embedding_dim=4), n_users=5, n_items=5, sides={}, mean=3.0)\n"
        "opt = m.configure_optimizers(lr=0.01, weight_decay=0.0)\n"
        "pred, _ = m(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([1, 2]))\n"
        "pred.sum().backward(); opt.step(); opt.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
