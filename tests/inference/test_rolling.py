import numpy as np
import pytest
import torch

from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.inference.online import OnlinePredictor, predict_online
from bufferanytime.inference.rolling import RollingWindowPredictor
from bufferanytime.models import VideoDepthModel, VideoNormalModel, load_model
from bufferanytime.tasks.depth import fit_scale_shift
from tests.helpers import moving_pattern, one_torch_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


def _depth_model(prior) -> VideoDepthModel:
    """A video model whose temporal blocks are no longer zero, so the window's frames change every output."""
    torch.manual_seed(0)
    model = VideoDepthModel.from_prior(prior)
    for block in model.temporal:
        torch.nn.init.normal_(block.proj_out.weight, std=0.05)
    return model.eval()


def _normal_model(prior) -> VideoNormalModel:
    torch.manual_seed(0)
    model = VideoNormalModel.from_prior(prior)
    with torch.no_grad():
        for name, param in model.temporal.named_parameters():
            if "proj_out" in name:
                param.normal_(std=0.5)
    return model.eval()


def _clip(frames=9, height=28, width=42) -> torch.Tensor:
    return torch.from_numpy(moving_pattern(frames, height, width)).permute(0, 3, 1, 2).float() / 255


def test_normals_step_equals_the_model_on_the_window_of_past_frames(tiny_normal_prior):
    """No alignment for normals: each step is exactly the model's output for the newest frame of its window."""
    model = _normal_model(tiny_normal_prior)
    clip = _clip(7, 32, 32)
    rolling = RollingWindowPredictor(model, window=3)
    with torch.no_grad():
        for t in range(len(clip)):
            out = rolling.step(clip[t])
            ref = model(clip[max(0, t - 2) : t + 1][None])[0, -1]
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)  # batched vs single encode


def test_depth_windows_are_aligned_so_per_window_scale_jumps_vanish(tiny_depth_prior):
    """A model whose every call has its own scale and shift gives, after alignment, the outputs of one without,
    up to the one scale and shift of the first frame (which has no past to be aligned to)."""
    model = _depth_model(tiny_depth_prior)
    clip = _clip()
    with torch.no_grad():
        clean = torch.stack([o for o in _steps(RollingWindowPredictor(model, window=4), clip)])
        decode = model.decode_frames
        rng = np.random.default_rng(0)

        def jumpy(features, frames, size):
            return decode(features, frames, size) * float(rng.uniform(0.3, 3.0)) + float(rng.uniform(-1, 1))

        model.decode_frames = jumpy
        aligned = torch.stack(_steps(RollingWindowPredictor(model, window=4), clip))
    assert not torch.allclose(clean, clean[0])  # the outputs do vary
    scale, shift = fit_scale_shift(clean[0], aligned[0])
    expected = (clean.double() * scale + shift).float()
    torch.testing.assert_close(aligned, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))


def _steps(rolling: RollingWindowPredictor, clip: torch.Tensor) -> list[torch.Tensor]:
    return [rolling.step(frame) for frame in clip]


def test_each_frame_is_encoded_once_and_memory_stays_bounded(tiny_depth_prior):
    model = _depth_model(tiny_depth_prior)
    calls = []
    encode = model.encode_frames

    def counting(images):
        calls.append(len(images))
        return encode(images)

    model.encode_frames = counting
    rolling = RollingWindowPredictor(model, window=3)
    with torch.no_grad():
        _steps(rolling, _clip(12))
    assert calls == [1] * 12
    assert len(rolling._frames) == 3 and len(rolling._outputs) == 2
    assert all(len(f) == 2 for f in rolling.predictor._tail)
    rolling.reset()
    assert not rolling._frames and not rolling._outputs


def test_first_frame_and_per_frame_model_match_the_offline_path(tiny_depth_prior):
    """Frame 0 has no past: it equals the model on that frame alone; a per-frame model equals the prior."""
    video = load_model("depth", tiny_depth_prior, per_frame=True)
    frames = moving_pattern(5, 28, 42)
    settings = InferenceSettings(max_res=42, device="cpu")
    offline = np.stack(list(predict_frames(video, iter(frames), settings)))
    online = np.stack(list(predict_online(OnlinePredictor(video, "rolling"), iter(frames), settings)))
    np.testing.assert_allclose(online, offline, rtol=1e-5, atol=1e-6)

    model = _depth_model(tiny_depth_prior)
    first = RollingWindowPredictor(model).step(_clip()[0])
    with torch.no_grad():
        torch.testing.assert_close(first, model(_clip()[:1][None])[0, 0])


def test_size_change_is_refused(tiny_depth_prior):
    rolling = RollingWindowPredictor(_depth_model(tiny_depth_prior), window=3)
    with torch.no_grad():
        rolling.step(torch.rand(3, 28, 42))
        with pytest.raises(ValueError, match="frame size changed"):
            rolling.step(torch.rand(3, 42, 28))
