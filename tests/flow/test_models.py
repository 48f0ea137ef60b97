import numpy as np
import pytest
import torch

from bufferanytime.errors import InputError
from bufferanytime.flow import FLOW_MODELS, RAFTSmall, flow_to_color, get_flow_model


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


def _epe(flow: torch.Tensor, dx: float, dy: float, border: int = 8) -> float:
    err = torch.hypot(flow[0, 0] - dx, flow[0, 1] - dy)
    return float(err[border:-border, border:-border].mean())


def test_registry_names_and_errors(tmp_path):
    assert set(FLOW_MODELS) == {"dis", "raft-small"}
    with pytest.raises(InputError, match="unknown flow method"):
        get_flow_model("farneback")
    with pytest.raises(InputError, match="weights"):
        get_flow_model("raft-small")
    with pytest.raises(InputError, match="not found"):
        get_flow_model("raft-small", weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"module.fnet.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="not a RAFT-small checkpoint"):
        get_flow_model("raft-small", weights=bad)


def test_dis_recovers_translation(shifted_pair):
    src, dst = shifted_pair(64, 80, 2.5, -1.5)
    flow = get_flow_model("dis")(_t(src), _t(dst))
    assert flow.shape == (1, 2, 64, 80) and flow.dtype == torch.float32
    assert _epe(flow, 2.5, -1.5) < 0.5


def test_raft_small_random_weights_any_size_and_batch():
    torch.manual_seed(0)
    model = RAFTSmall(iters=2).eval()
    src, dst = torch.rand(2, 3, 37, 45), torch.rand(2, 3, 37, 45)
    with torch.no_grad():
        flow = model(src, dst)
        single = model(src[1:], dst[1:])
    assert flow.shape == (2, 2, 37, 45) and torch.isfinite(flow).all()
    assert (flow[0] - flow[1]).abs().mean() > 1e-2  # measured 0.065: each item's flow is its own
    assert torch.allclose(flow[1:], single, atol=1e-4)


def test_raft_small_flow_upsamples_small_frames_and_rescales(tmp_path):
    weights = tmp_path / "random.pth"
    torch.save({f"module.{k}": v for k, v in RAFTSmall().state_dict().items()}, weights)
    model = get_flow_model("raft-small", weights=weights, iters=1, min_side=64)
    assert model.working_size(20, 30) == (64, 96) and model.working_size(80, 90) == (80, 90)
    seen = []

    def constant_flow(a, b):  # 8 px right, 4 px down at the working resolution
        seen.append(tuple(a.shape[-2:]))
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0], flow[:, 1] = 8.0, 4.0
        return flow

    model.model = constant_flow
    flow = model(torch.rand(3, 3, 20, 30), torch.rand(3, 3, 20, 30))
    assert seen == [(64, 96)] and flow.shape == (3, 2, 20, 30)
    assert torch.allclose(flow[:, 0], torch.full((3, 20, 30), 8.0 * 30 / 96))
    assert torch.allclose(flow[:, 1], torch.full((3, 20, 30), 4.0 * 20 / 64))
    native = get_flow_model("raft-small", weights=weights, iters=1, min_side=0)
    assert native.working_size(20, 30) == (20, 30)


def test_raft_small_official_weights_recover_translation(raft_weights, shifted_pair):
    torch.manual_seed(0)
    src, dst = shifted_pair(96, 128, 3.0, -2.0, seed=1)
    model = get_flow_model("raft-small", weights=raft_weights, iters=12, min_side=0)  # the network as released
    fwd = model(torch.cat([_t(src), _t(dst)]), torch.cat([_t(dst), _t(src)]))
    assert _epe(fwd[:1], 3.0, -2.0) < 0.5
    assert _epe(fwd[1:], -3.0, 2.0) < 0.5


def test_flow_to_color_wheel():
    flow = np.zeros((2, 3, 2), np.float32)
    flow[0, 1] = (1, 0)  # right
    flow[0, 2] = (-1, 0)  # left
    flow[1, 0] = (2, 0)  # beyond the scale: darkened
    img = flow_to_color(flow, max_magnitude=1.0)
    assert img.dtype == np.uint8 and img.shape == (2, 3, 3)
    assert (img[0, 0] == 255).all()  # no motion is white
    r, g, b = img[0, 1].astype(int)
    assert r > 200 and g < 60  # right is red in the Middlebury wheel
    assert img[0, 2, 2] > img[0, 2, 0]  # left is blue/cyan
    assert img[1, 0].max() <= 0.75 * 255 + 1
