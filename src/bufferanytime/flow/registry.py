"""One entry point for every flow estimator: ``get_flow_model(name, **kw) -> callable(src, dst) -> flow``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from bufferanytime.errors import InputError
from bufferanytime.flow.dis import DISFlow
from bufferanytime.flow.raft_small import DEFAULT_ITERS, RAFTSmall

FlowModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class RAFTSmallFlow:
    """``(src, dst) -> flow`` with RAFT-small: no gradient, ``batch_size`` pairs at a time on ``device``.

    ``src``/``dst`` are ``(N, 3, H, W)`` RGB in [0, 1]; the flow ``(N, 2, H, W)`` float32 (pixels) is returned on
    the input's device. The all-pairs correlation costs ``4 * (H*W/64)^2`` bytes per pair (~200 MB at
    1024x436), hence the small default batch.
    """

    name = "raft-small"

    def __init__(
        self, weights: str | Path, iters: int = DEFAULT_ITERS, device: str | torch.device = "cpu", batch_size: int = 4
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = RAFTSmall.from_checkpoint(weights, iters=iters).to(self.device)

    @torch.no_grad()
    def __call__(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, src.shape[0], self.batch_size):
            a = src[i : i + self.batch_size].to(self.device, torch.float32)
            b = dst[i : i + self.batch_size].to(self.device, torch.float32)
            out.append(self.model(a, b).to(src.device))
        return torch.cat(out)


FLOW_MODELS: dict[str, Callable[..., FlowModel]] = {"dis": DISFlow, "raft-small": RAFTSmallFlow}


def get_flow_model(name: str, **kwargs) -> FlowModel:
    """Builds a flow estimator by name (``"dis"``, ``"raft-small"``).

    ``get_flow_model("raft-small", weights=PATH, iters=12, device="cpu")`` needs the official checkpoint;
    ``get_flow_model("dis")`` takes no weights. Unknown names or a missing weights file raise ``InputError``.
    """
    if name not in FLOW_MODELS:
        raise InputError(f"unknown flow method {name!r}; choose one of {', '.join(FLOW_MODELS)}")
    if name == "raft-small" and kwargs.get("weights") is None:
        raise InputError("raft-small needs its weights: pass the official raft-small.pth (--flow-weights PATH)")
    return FLOW_MODELS[name](**kwargs)
