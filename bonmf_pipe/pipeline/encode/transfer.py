"""Host <-> device copies that overlap with compute on CUDA (plain tensors on the CPU).

Inputs go up from pinned memory with ``non_blocking=True``; results come back into pinned
memory, also without blocking, and are waited for only when the loop needs them (after the
next batch is queued), so the GPU never idles while Python converts a batch.
"""

from __future__ import annotations

from typing import Any


def to_device(tensor: Any, device: Any) -> Any:
    """``tensor`` on ``device``; on CUDA copied from pinned memory without blocking."""
    if device.type != "cuda":
        return tensor.to(device)
    if tensor.device.type == "cpu" and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class HostResult:
    """A device tensor on its way to the host; ``numpy()`` waits for this copy only."""

    def __init__(self, out: Any):
        import torch

        self.event = None
        if out.device.type == "cuda":
            self.host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            self.host.copy_(out, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = out.detach().to("cpu")

    def numpy(self) -> Any:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()
