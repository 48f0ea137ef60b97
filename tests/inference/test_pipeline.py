import numpy as np
import torch

from bufferanytime.inference import InferenceSettings, predict_frames
from bufferanytime.models import VideoDepthModel, load_model
from tests.helpers import moving_pattern


def _trained_like(prior, tmp_path):
    torch.manual_seed(0)
    model = VideoDepthModel.from_prior(prior)
    for block in model.temporal:
        torch.nn.init.normal_(block.proj_out.weight, std=0.05)
    torch.nn.init.normal_(model.head.conv3.weight, std=0.5)
    model.save_pretrained(tmp_path / "video")
    return tmp_path / "video"


def test_feature_reuse_across_windows_changes_nothing(tiny_depth_prior, tmp_path):
    """Overlapping windows reuse the frozen features of shared frames; outputs equal recomputing them."""
    model = load_model("depth", _trained_like(tiny_depth_prior, tmp_path))
    clip = moving_pattern(frames=13, height=42, width=56)
    settings = InferenceSettings(max_res=56, window=6, overlap=2, device="cpu")
    reused = np.stack(list(predict_frames(model, iter(clip), settings)))

    calls = []
    original = model.encode_frames

    def counting(images):
        calls.append(len(images))
        return original(images)

    model.encode_frames = counting
    again = np.stack(list(predict_frames(model, iter(clip), settings)))
    assert sum(calls) == 13  # every frame through the frozen encoder exactly once
    np.testing.assert_array_equal(again, reused)

    with torch.no_grad():  # the same windows computed from scratch, stitched by hand for the first seam
        full = model.eval()(torch.from_numpy(clip[:6]).permute(0, 3, 1, 2)[None].float() / 255)[0].numpy()
    np.testing.assert_allclose(reused[:4], full[:4], rtol=1e-5, atol=1e-6)


def test_single_window_equals_one_forward(tiny_depth_prior, tmp_path):
    model = load_model("depth", _trained_like(tiny_depth_prior, tmp_path)).eval()
    clip = moving_pattern(frames=7, height=28, width=42)
    out = np.stack(list(predict_frames(model, iter(clip), InferenceSettings(max_res=42, window=16, device="cpu"))))
    with torch.no_grad():
        ref = model(torch.from_numpy(clip).permute(0, 3, 1, 2)[None].float() / 255)[0].numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_a_window_waits_as_uint8_and_gives_what_float_frames_give(tiny_depth_prior, tmp_path):
    """The predictor takes a window as uint8 (a quarter of the memory) and makes each chunk float as it encodes
    it: the outputs equal those of the same frames given as float in [0, 1]."""
    from bufferanytime.inference import Predictor
    from bufferanytime.io.arrays import frame_to_tensor, frame_to_uint8_tensor

    model = load_model("depth", _trained_like(tiny_depth_prior, tmp_path))
    clip = moving_pattern(frames=11, height=28, width=42)
    as_uint8 = torch.stack([frame_to_uint8_tensor(frame) for frame in clip])
    as_float = torch.stack([frame_to_tensor(frame) for frame in clip])
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == as_float.shape
    outputs = [Predictor(model, torch.device("cpu"), "fp32")(frames) for frames in (as_uint8, as_float)]
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    assert float(outputs[0].std()) > 0


def test_visualisation_keeps_frame_order_and_colours(tmp_path):
    """The visualisation is coloured on a prefetch thread and encoded with frame threads: every frame arrives, in
    order, in the colour of its own values."""
    import av

    from bufferanytime.inference.pipeline import _write_visualisation
    from bufferanytime.tasks import DEPTH

    data = np.stack([np.full((48, 64), value, np.float32) for value in np.linspace(0.0, 1.0, 12)] * 2)
    info = _write_visualisation(DEPTH, data, tmp_path / "vis.mp4", fps=12.0)
    with av.open(str(tmp_path / "vis.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(0) for frame in container.decode(video=0)]
    expected = [DEPTH.to_rgb(frame, tuple(info["range"])).reshape(-1, 3).mean(0) for frame in data]
    assert len(decoded) == len(data)
    errors = np.abs(np.array(decoded) - np.array(expected)).max(1)
    assert errors.max() < 8, errors
    steps = np.abs(np.diff(np.array(expected), axis=0)).max(1)
    assert steps.min() > 2 * errors.max()  # neighbouring frames differ more than the codec moves a colour
