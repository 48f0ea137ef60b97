"""One entry point for every flow estimator: ``get_flow_model(name, **kw) -> callable(src, dst) -> flow``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from bufferanytime.errors import InputError
from bufferanytime.flow.dis import DISFlow
from bufferanytime.flow.raft_small import DEFAULT_ITERS, RAFTSmall
from bufferanytime.registry import Registry

FlowModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# RAFT-small's flow is estimated on a 1/8 grid and upsampled bilinearly, so on small frames it loses sub-pixel
# accuracy and thin structures. Frames whose short side is below this are upsampled to it first (and the flow
# scaled back); 512 px is near the 400-540 px scale of the FlyingThings3D frames the checkpoint was trained on.
# On 192x256 synthetic clips this cut the end-point error from ~0.6 to ~0.2 px (x1.5: ~0.4, x2: ~0.3).
# 0 or None runs at the input resolution, like the official code.
RAFT_MIN_SIDE = 512


class RAFTSmallFlow:
    """``(src, dst) -> flow`` with RAFT-small: no gradient, ``batch_size`` pairs at a time on ``device``.

    ``src``/``dst`` are ``(N, 3, H, W)`` RGB in [0, 1]; the flow ``(N, 2, H, W)`` float32 (pixels) is returned on
    the input's device. Frames with a short side below ``min_side`` are upsampled (bilinear) to it before the
    network and the flow is resampled back and rescaled (see ``RAFT_MIN_SIDE``). The all-pairs correlation costs
    ``4 * (H*W/64)^2`` bytes per pair at the working resolution (~200 MB at 1024x436), hence the small batch.
    """

    name = "raft-small"

    def __init__(
        self,
        weights: str | Path,
        iters: int = DEFAULT_ITERS,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        min_side: int | None = RAFT_MIN_SIDE,
    ) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.min_side = min_side or 0
        self.model = RAFTSmall.from_checkpoint(weights, iters=iters).to(self.device)

    def working_size(self, h: int, w: int) -> tuple[int, int]:
        """Resolution at which the network runs for ``h x w`` frames."""
        scale = self.min_side / min(h, w)
        return (h, w) if scale <= 1 else (round(h * scale), round(w * scale))

    @torch.no_grad()
    def __call__(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        h, w = src.shape[-2:]
        size = self.working_size(h, w)
        out = []
        for i in range(0, src.shape[0], self.batch_size):
            a = src[i : i + self.batch_size].to(self.device, torch.float32)
            b = dst[i : i + self.batch_size].to(self.device, torch.float32)
            if size != (h, w):
                a, b = (F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in (a, b))
            flow = self.model(a, b)
            if size != (h, w):
                flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
                flow = flow * torch.tensor([w / size[1], h / size[0]], device=flow.device).view(1, 2, 1, 1)
            out.append(flow.to(src.device))
        return torch.cat(out)


#: The flow estimators, by name: each a class whose instances are ``FlowModel`` s.
FLOW_MODELS: Registry[Callable[..., FlowModel]] = Registry("flow method")
FLOW_MODELS.register("dis", DISFlow)
FLOW_MODELS.register("raft-small", RAFTSmallFlow)


def list_flows() -> list[str]:
    """Names ``get_flow_model`` accepts."""
    return FLOW_MODELS.list()


def get_flow_model(name: str, **kwargs) -> FlowModel:
    """Builds a flow estimator by name (``"dis"``, ``"raft-small"``).

    ``get_flow_model("raft-small", weights=PATH, iters=12, device="cpu", min_side=512)`` needs the official
    checkpoint; ``get_flow_model("dis")`` takes no weights. Unknown names or a missing weights file raise
    ``InputError``.
    """
    cls = FLOW_MODELS.get(name)
    if cls is RAFTSmallFlow and kwargs.get("weights") is None:
        raise InputError("raft-small needs its weights: pass the official raft-small.pth (--flow-weights PATH)")
    return cls(**kwargs)
