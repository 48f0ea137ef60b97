import torch

from bufferanytime.inference.windows import default_overlap, sliding_windows
from bufferanytime.tasks import DEPTH, NORMAL
from bufferanytime.tasks.depth import align_depth, fit_scale_shift


def _collect(frames, predict, kind, window, overlap):
    return torch.stack(list(sliding_windows(iter(frames), predict, kind, window, overlap)))


def test_video_that_fits_one_window_is_exactly_that_window():
    frames = torch.rand(7, 3, 4, 5)
    predict = lambda clip, reused: clip.mean(dim=1) * torch.arange(1, len(clip) + 1).view(-1, 1, 1)  # noqa: E731
    out = _collect(frames, predict, DEPTH, window=10, overlap=3)
    assert torch.equal(out, predict(frames, 0))


def test_every_frame_comes_out_once_in_order_for_any_length():
    for length in (1, 5, 8, 9, 13, 21):
        frames = torch.arange(length, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
        out = _collect(frames, lambda clip, reused: clip[:, 0], DEPTH, window=5, overlap=2)
        assert torch.allclose(out[:, 0, 0], torch.arange(length, dtype=torch.float32), atol=1e-5)


def test_static_scene_is_consistent_across_seams_despite_per_window_scale():
    """Each window sees a different unknown scale and shift; stitching must remove them."""
    depth = torch.rand(4, 6) + 0.5
    frames = depth.expand(30, 3, 4, 6).clone()
    calls = []

    def predict(clip, reused):
        calls.append(len(clip))
        s, t = 1.0 + len(calls), 0.3 * len(calls)
        return clip[:, 0] * s + t

    out = _collect(frames, predict, DEPTH, window=8, overlap=3)
    assert len(calls) > 3
    assert (out - out[0]).abs().max() < 1e-5


def test_normals_are_blended_and_renormalised():
    frames = torch.zeros(12, 3, 2, 2)
    flip = iter([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])

    def predict(clip, reused):
        n = torch.tensor([0.6 * next(flip), 0.0, 0.8]).view(1, 3, 1, 1)
        return n.expand(len(clip), 3, 2, 2)

    out = _collect(frames, predict, NORMAL, window=6, overlap=2)
    assert torch.allclose(out.norm(dim=1), torch.ones(12, 2, 2), atol=1e-6)


def test_scale_shift_fit_and_alignment_are_exact():
    src = torch.rand(3, 5, 5)
    s, t = fit_scale_shift(src, 2.5 * src - 0.7)
    assert abs(s.item() - 2.5) < 1e-6 and abs(t.item() + 0.7) < 1e-6  # float32 inputs
    new = torch.rand(6, 5, 5)
    aligned = align_depth(new, 3 * new[:2] + 1)
    assert torch.allclose(aligned, 3 * new + 1, atol=1e-5)
    assert default_overlap(110) == 13 and default_overlap(32) == 4 and default_overlap(3) == 0


def test_reused_counts_the_frames_shared_with_the_previous_call():
    frames = torch.arange(11, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 1, 1)
    seen = []

    def predict(clip, reused):
        seen.append((clip[:, 0, 0, 0].tolist(), reused))
        return clip[:, 0]

    _collect(frames, predict, DEPTH, window=5, overlap=2)
    assert seen == [([0, 1, 2, 3, 4], 0), ([3, 4, 5, 6, 7], 2), ([6, 7, 8, 9, 10], 2)]
