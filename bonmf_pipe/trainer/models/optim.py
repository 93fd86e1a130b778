"""AdamW through torch's fused kernel, without ``torch.optim``.

Building any ``torch.optim`` optimiser imports ``torch._dynamo`` (its methods are wrapped to
keep the compiler out), which costs every training process about 150 MB of resident memory
and a second of start-up whatever the data. The trainer needs none of it: ``FusedAdamW`` calls
the same kernel as ``torch.optim.AdamW(fused=True)`` (``torch._fused_adamw_``) with the same
state, so its updates are the same bits (tests/trainer/test_optim.py compares them) and its
``state_dict`` has torch's layout, so checkpoints load either way.
"""

from __future__ import annotations

from typing import Any

import torch

# torch.optim.AdamW's defaults, recorded in every group as torch records them.
DEFAULTS: dict[str, Any] = {
    "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False, "maximize": False,
    "foreach": None, "capturable": False, "differentiable": False, "fused": True, "decoupled_weight_decay": True,
}


class FusedAdamW:
    """``torch.optim.AdamW(groups, lr=lr, fused=True)`` for parameters on the CPU or a CUDA device:
    ``param_groups``, ``step``, ``zero_grad``, ``state_dict`` and ``load_state_dict`` as torch has them."""

    def __init__(self, groups: list[dict[str, Any]], lr: float) -> None:
        self.param_groups = [{**g, "params": list(g["params"])} for g in groups]
        for g in self.param_groups:
            for key, value in {"lr": lr, **DEFAULTS}.items():
                g.setdefault(key, value)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self.kept_grads = False

    def keep_grads(self) -> None:
        """Allocate every trainable parameter's gradient once, now; from here on ``zero_grad``
        zeroes them in place whatever ``set_to_none`` says. Row-sparse gradients (an
        ``nn.Embedding(sparse=True)``'s backward) then add their rows into the kept dense
        gradient instead of a new table-sized one being allocated and zero-filled each step."""
        self.kept_grads = True
        self.zero_grad()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (their state made on first use)."""
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = g["betas"]
            torch._fused_adamw_(
                params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [], steps, amsgrad=False, lr=g["lr"], beta1=beta1, beta2=beta2,
                weight_decay=g["weight_decay"], eps=g["eps"], maximize=False, grad_scale=None, found_inf=None,
            )

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        state = self.state.get(p)
        if state is None:
            state = self.state[p] = _new_state(p)
        return state

    def zero_grad(self, set_to_none: bool = True) -> None:
        for g in self.param_groups:
            for p in g["params"]:
                if self.kept_grads and p.requires_grad:
                    if p.grad is None or p.grad.is_sparse:
                        p.grad = torch.zeros_like(p)
                    else:
                        p.grad.zero_()
                elif set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """Torch's layout: parameters numbered in group order, state keyed by that number."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p in g["params"]]
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        params = [p for g in self.param_groups for p in g["params"]]
        state = {index[id(p)]: dict(self.state[p]) for p in params if p in self.state}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """A ``state_dict`` of this class or of ``torch.optim.AdamW`` over the same groups."""
        saved = sd["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the optimiser state has groups of other sizes than this model's parameters")
        number = {i: p for old, new in zip(saved, self.param_groups) for i, p in zip(old["params"], new["params"])}
        for g, old in zip(self.param_groups, saved):
            g.update({k: (tuple(v) if k == "betas" else v) for k, v in old.items() if k != "params"})
        self.state = {}
        for i, s in sd["state"].items():
            p = number[int(i)]
            self.state[p] = {
                "step": s["step"].to(dtype=torch.float32, device=p.device),
                "exp_avg": s["exp_avg"].to(dtype=p.dtype, device=p.device),
                "exp_avg_sq": s["exp_avg_sq"].to(dtype=p.dtype, device=p.device),
            }


def _new_state(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """What torch's fused AdamW starts a parameter with: a float32 step on its device, zero moments."""
    return {
        "step": torch.zeros((), dtype=torch.float32, device=p.device),
        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
    }


def adamw(groups: list[dict[str, Any]], lr: float) -> FusedAdamW | torch.optim.AdamW:
    """AdamW over ``groups``: ``FusedAdamW`` (one kernel per step for every parameter: on the CPU
    about half the step time of the per-tensor loop at these sizes) when every parameter is a
    floating tensor on the CPU or a CUDA device, else ``torch.optim.AdamW`` (same update rule)."""
    params = [p for g in groups for p in g["params"]]
    if params and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params):
        return FusedAdamW(groups, lr)
    return torch.optim.AdamW(groups, lr=lr)
