from pathlib import Path

import cv2
import numpy as np
import pytest

from bufferanytime.errors import InputError
from bufferanytime.io.video import write_video
from bufferanytime.training.data import (
    ClipDataset,
    ClipSampler,
    SampleIndices,
    crop_box,
    discover_videos,
    read_clip,
)


def _write_frames(folder: Path, count: int, size=(24, 32), offset: int = 0) -> Path:
    """Frames whose every pixel encodes the frame index (value 10 * index)."""
    folder.mkdir(parents=True)
    for i in range(count):
        frame = np.full((*size, 3), 10 * (i + offset), np.uint8)
        cv2.imwrite(str(folder / f"{i:06d}.png"), frame)
    return folder


def test_discovery_finds_videos_frame_folders_and_synthetic_rgb_only(tmp_path):
    root = tmp_path / "data"
    seq = root / "seq_000001"
    _write_frames(seq / "rgb", 5)
    _write_frames(seq / "depth", 5)  # ground truth next to rgb/: ignored
    np.save(seq / "depth.npy", np.zeros((5, 24, 32), np.float32))
    write_video(seq / "rgb.mp4", [np.zeros((24, 32, 3), np.uint8)] * 5)  # same frames again: ignored
    _write_frames(root / "plain" / "frames", 4)
    (root / "sub").mkdir()
    (root / ".hidden").mkdir()
    write_video(root / "sub" / "clip.mp4", [np.full((24, 32, 3), 100, np.uint8)] * 6)
    write_video(root / ".hidden" / "skip.mp4", [np.zeros((24, 32, 3), np.uint8)] * 6)
    _write_frames(root / "single", 1)  # one frame: too short for a clip

    videos = discover_videos([root])
    found = {Path(v.path).relative_to(root.resolve()).as_posix(): v for v in videos}
    assert set(found) == {"seq_000001/rgb", "plain/frames", "sub/clip.mp4"}
    assert found["seq_000001/rgb"].num_frames == 5 and found["seq_000001/rgb"].kind == "folder"
    assert (found["sub/clip.mp4"].kind, found["sub/clip.mp4"].num_frames) == ("video", 6)
    assert [v.path for v in videos] == sorted(v.path for v in videos)
    assert discover_videos([root / "sub" / "clip.mp4"])[0].path == found["sub/clip.mp4"].path


def test_discovery_errors(tmp_path):
    with pytest.raises(InputError, match="no such data folder"):
        discover_videos([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("nothing here")
    with pytest.raises(InputError, match="no videos found"):
        discover_videos([tmp_path / "empty"])


def test_crop_boxes_have_the_target_aspect_and_stay_inside():
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(20, 400, 2))
        res = tuple(int(v) for v in rng.integers(14, 300, 2))
        x0, y0, w, h = crop_box(rng, height, width, res, min_crop=0.5)
        assert 0 <= x0 and x0 + w <= width and 0 <= y0 and y0 + h <= height
        largest = min(width, height * res[1] / res[0])  # width of the largest crop of that aspect
        assert 0.5 * largest - 1 <= w <= largest + 1
        aspect = res[1] / res[0]
        assert abs(w / h - aspect) <= aspect * (1.0 / w + 1.0 / h)  # sides rounded to whole pixels


def _sampler(tmp_path, clip_len=3, stride=2, clips_per_video=2, seed=0):
    for i, count in enumerate((9, 7, 4)):
        _write_frames(tmp_path / f"v{i}", count, offset=i)
    videos = discover_videos([tmp_path])
    return ClipSampler(videos, clip_len, stride, (14, 21), 0.5, clips_per_video, seed)


def test_samples_are_a_pure_function_of_seed_and_index_and_epochs_cover_every_slot(tmp_path):
    sampler = _sampler(tmp_path)
    again = ClipSampler(sampler.videos, 3, 2, (14, 21), 0.5, 2, seed=0)
    other = ClipSampler(sampler.videos, 3, 2, (14, 21), 0.5, 2, seed=1)
    n = sampler.num_slots
    assert n == 6
    first = [sampler.slot_of_sample(g) for g in range(3 * n)]
    assert first == [again.slot_of_sample(g) for g in range(3 * n)]
    assert first != [other.slot_of_sample(g) for g in range(3 * n)]
    for epoch in range(3):
        assert sorted(first[epoch * n : (epoch + 1) * n]) == list(range(n))
    assert [sampler.slot(s) for s in range(n)] == [again.slot(s) for s in range(n)]
    assert all(0.0 <= sampler.reg_fraction(g) < 1.0 for g in range(50))


def test_clips_respect_start_stride_length_and_resolution(tmp_path):
    sampler = _sampler(tmp_path)
    for slot in range(sampler.num_slots):
        spec = sampler.slot(slot)
        video = sampler.videos[slot // 2]
        frames = read_clip(spec)
        # the 4-frame video has only 2 frames at stride 2: a shorter clip
        assert spec.length == min(3, (video.num_frames - 1) // 2 + 1)
        assert spec.start + (spec.length - 1) * 2 < video.num_frames
        assert frames.shape == (spec.length, 3, 14, 21) and frames.dtype.__str__() == "torch.uint8"
        offset = int(Path(video.path).name[1:])
        expected = [10 * (spec.start + 2 * i + offset) for i in range(spec.length)]
        assert frames[:, 0, 0, 0].tolist() == expected


def test_processes_share_out_disjoint_samples_of_each_step():
    ranks = [list(SampleIndices(3, 6, batch_size=2, rank=r, world_size=3)) for r in range(3)]
    assert sorted(sum(ranks, [])) == list(range(3 * 6, 6 * 6))
    assert ranks[1][:2] == [3 * 6 + 2, 3 * 6 + 3]


def test_cached_clips_are_not_read(tmp_path):
    sampler = _sampler(tmp_path)
    seen = []

    def lookup(spec):
        seen.append(spec)
        return {"flow_fwd": np.zeros(1)} if len(seen) % 2 else None

    dataset = ClipDataset(sampler, lookup)
    hit, miss = dataset[0], dataset[1]
    assert hit["cached"] is not None and hit["frames"] is None
    assert miss["cached"] is None and miss["frames"].shape[1:] == (3, 14, 21)
    assert hit["spec"] == sampler.slot(sampler.slot_of_sample(0))


def test_unreadable_video_at_indexing_is_one_warning_line_and_skipped(tmp_path, capsys, recwarn):
    _write_frames(tmp_path / "good", 4)
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    videos = discover_videos([tmp_path])
    assert [Path(v.path).name for v in videos] == ["good"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: skipping ") and "broken.mp4" in lines[0], lines
    assert [str(w.message) for w in recwarn] == []  # not a Python warning with its file:line prefix
