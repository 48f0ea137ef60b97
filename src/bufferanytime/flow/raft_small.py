"""RAFT-small optical flow (Teed & Deng, ECCV 2020), written for this project.

The layer names and shapes follow the official release so that its checkpoint (``raft-small.pth``, keys
``module.fnet.*``, ``module.cnet.*``, ``module.update_block.*``) loads with ``strict=True``:

- feature encoder ``fnet`` and context encoder ``cnet``: the small bottleneck encoder at 1/8 resolution,
  instance norm (no affine parameters) for ``fnet``, no normalisation for ``cnet``;
- all-pairs correlation of the 1/8 features, pooled into a 4-level pyramid, looked up in a
  ``(2r+1)^2`` window of radius 3 around the current estimate at every level;
- a ConvGRU update block (hidden 96, context 64) that refines the flow a fixed number of times;
- bilinear 8x upsampling of the final 1/8 flow (the small model has no convex-upsampling mask head).

Inputs are RGB in [0, 1]; like the official code they are mapped to ``2 * (img / 255) - 1`` of 0..255 images,
i.e. ``2 * x - 1``, and padded to multiples of 8 by edge replication (centred, as the official ``InputPadder``
does for Sintel). Inside the network, coordinates are pixel indices (pixel centre at integer positions);
the returned flow is a displacement in pixels, so it follows the package convention directly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bufferanytime.errors import InputError

HIDDEN_DIM = 96  # ConvGRU state channels of RAFT-small
CONTEXT_DIM = 64  # context feature channels of RAFT-small
FEATURE_DIM = 128  # matching feature channels of RAFT-small
CORR_LEVELS = 4  # correlation pyramid levels
CORR_RADIUS = 3  # look-up radius (at every level) of RAFT-small
DEFAULT_ITERS = 12  # refinement iterations, the official default at test time
DOWNSAMPLE = 8  # features live at 1/8 of the input resolution
# Smallest padded side: the coarsest correlation level must keep at least one cell (the official code fails below).
MIN_SIDE = DOWNSAMPLE * 2 ** (CORR_LEVELS - 1)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 residual block; ``norm`` is ``"instance"`` or ``"none"``."""

    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        mid = planes // 4
        self.conv1 = nn.Conv2d(in_planes, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, planes, kernel_size=1)
        self.norm1, self.norm2, self.norm3 = (_norm(norm, c) for c in (mid, mid, planes))
        self.downsample = None
        if stride != 1:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride), _norm(norm, planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        if self.downsample is not None:
            x = self.downsample(x)
        return F.relu(x + y)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # no affine parameters, no running stats (as the checkpoint)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}")


class SmallEncoder(nn.Module):
    """Image -> features at 1/8 resolution (7x7/2 stem, three stages of two bottleneck blocks)."""

    def __init__(self, output_dim: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=7, stride=2, padding=3)
        self.norm1 = _norm(norm, 32)
        self.layer1 = nn.Sequential(BottleneckBlock(32, 32, norm, 1), BottleneckBlock(32, 32, norm, 1))
        self.layer2 = nn.Sequential(BottleneckBlock(32, 64, norm, 2), BottleneckBlock(64, 64, norm, 1))
        self.layer3 = nn.Sequential(BottleneckBlock(64, 96, norm, 2), BottleneckBlock(96, 96, norm, 1))
        self.conv2 = nn.Conv2d(96, output_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class SmallMotionEncoder(nn.Module):
    """Encodes the correlation look-up and the current flow into motion features (80 + 2 channels)."""

    def __init__(self) -> None:
        super().__init__()
        corr_planes = CORR_LEVELS * (2 * CORR_RADIUS + 1) ** 2
        self.convc1 = nn.Conv2d(corr_planes, 96, 1)
        self.convf1 = nn.Conv2d(2, 64, 7, padding=3)
        self.convf2 = nn.Conv2d(64, 32, 3, padding=1)
        self.conv = nn.Conv2d(128, 80, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc1(corr))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([cor, flo], dim=1)))
        return torch.cat([out, flow], dim=1)


class ConvGRU(nn.Module):
    """Convolutional GRU cell with 3x3 gates."""

    def __init__(self, hidden_dim: int, input_dim: int) -> None:
        super().__init__()
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class FlowHead(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class SmallUpdateBlock(nn.Module):
    """One refinement step: motion features + context -> GRU -> flow increment."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SmallMotionEncoder()
        self.gru = ConvGRU(HIDDEN_DIM, input_dim=82 + CONTEXT_DIM)
        self.flow_head = FlowHead(HIDDEN_DIM, hidden_dim=128)

    def forward(
        self, net: torch.Tensor, inp: torch.Tensor, corr: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        motion = self.encoder(flow, corr)
        net = self.gru(net, torch.cat([inp, motion], dim=1))
        return net, self.flow_head(net)


def _sample_pixels(img: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear look-up of ``img`` (N,C,H,W) at pixel-index coordinates ``coords`` (N,h,w,2), zero outside."""
    h, w = img.shape[-2:]
    x = 2 * coords[..., 0] / max(w - 1, 1) - 1
    y = 2 * coords[..., 1] / max(h - 1, 1) - 1
    return F.grid_sample(img, torch.stack([x, y], dim=-1), align_corners=True)


class CorrPyramid:
    """All-pairs correlation volume of two feature maps, average-pooled into ``CORR_LEVELS`` levels."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor) -> None:
        n, c, h, w = fmap1.shape
        corr = torch.matmul(fmap1.reshape(n, c, h * w).transpose(1, 2), fmap2.reshape(n, c, h * w))
        corr = (corr / c**0.5).reshape(n * h * w, 1, h, w)
        self.pyramid = [corr]
        for _ in range(CORR_LEVELS - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)
        r = CORR_RADIUS
        d = torch.linspace(-r, r, 2 * r + 1, device=fmap1.device, dtype=fmap1.dtype)
        # Window offsets as (dx, dy) with dx varying along the first window axis, the channel order of the
        # official implementation (the trained motion encoder depends on it).
        dx, dy = torch.meshgrid(d, d, indexing="ij")
        self.delta = torch.stack([dx, dy], dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)

    def __call__(self, coords: torch.Tensor) -> torch.Tensor:
        n, _, h, w = coords.shape
        centre = coords.permute(0, 2, 3, 1).reshape(n * h * w, 1, 1, 2)
        out = []
        for level, corr in enumerate(self.pyramid):
            window = _sample_pixels(corr, centre / 2**level + self.delta)
            out.append(window.view(n, h, w, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


def _pixel_grid(n: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype), indexing="ij"
    )
    return torch.stack([xs, ys])[None].expand(n, -1, -1, -1)


class RAFTSmall(nn.Module):
    """RAFT-small. ``forward(src, dst)`` takes RGB in [0, 1], shape (N,3,H,W), and returns flow (N,2,H,W) in pixels.

    ``src(p)`` matches ``dst(p + flow(p))``. Any H, W is accepted: images are padded internally to multiples of 8
    and to at least ``MIN_SIDE`` = 64 pixels per side.
    """

    def __init__(self, iters: int = DEFAULT_ITERS) -> None:
        super().__init__()
        self.iters = iters
        self.fnet = SmallEncoder(FEATURE_DIM, norm="instance")
        self.cnet = SmallEncoder(HIDDEN_DIM + CONTEXT_DIM, norm="none")
        self.update_block = SmallUpdateBlock()

    @classmethod
    def from_checkpoint(cls, path: str | Path, iters: int = DEFAULT_ITERS) -> RAFTSmall:
        """Loads the official checkpoint (keys with or without the ``module.`` prefix), strictly."""
        path = Path(path)
        if not path.is_file():
            raise InputError(
                f"RAFT-small weights not found at {path}; pass the official raft-small.pth with --flow-weights"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign file
            raise InputError(f"cannot read RAFT-small weights {path}: {exc}") from exc
        state = {k.removeprefix("module."): v for k, v in state.items()}
        model = cls(iters=iters)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise InputError(f"{path} is not a RAFT-small checkpoint: {str(exc).splitlines()[0]}") from exc
        return model.eval()

    def forward(self, src: torch.Tensor, dst: torch.Tensor, iters: int | None = None) -> torch.Tensor:
        if src.shape != dst.shape or src.ndim != 4 or src.shape[1] != 3:
            raise ValueError(f"expected two (N,3,H,W) images of equal shape, got {src.shape} and {dst.shape}")
        iters = self.iters if iters is None else iters
        n, _, h, w = src.shape
        pad_h = max((-h) % DOWNSAMPLE, MIN_SIDE - h)
        pad_w = max((-w) % DOWNSAMPLE, MIN_SIDE - w)
        pad = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        images = torch.cat([src, dst]).float() * 2 - 1
        if pad_h or pad_w:
            images = F.pad(images, pad, mode="replicate")

        fmap1, fmap2 = self.fnet(images).split(n)
        corr_fn = CorrPyramid(fmap1, fmap2)
        net, inp = self.cnet(images[:n]).split([HIDDEN_DIM, CONTEXT_DIM], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)

        coords0 = _pixel_grid(n, *fmap1.shape[-2:], device=src.device, dtype=fmap1.dtype)
        coords1 = coords0.clone()
        for _ in range(iters):
            coords1 = coords1.detach()
            net, delta = self.update_block(net, inp, corr_fn(coords1), coords1 - coords0)
            coords1 = coords1 + delta

        low = coords1 - coords0
        flow = DOWNSAMPLE * F.interpolate(
            low, size=(DOWNSAMPLE * low.shape[-2], DOWNSAMPLE * low.shape[-1]), mode="bilinear", align_corners=True
        )
        return flow[..., pad[2] : pad[2] + h, pad[0] : pad[0] + w]
