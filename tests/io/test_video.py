from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bufferanytime.errors import InputError
from bufferanytime.io import NpyStreamWriter, expand_inputs, open_video, write_video
from tests.helpers import moving_pattern


def test_video_round_trip_streams_frames(tmp_path):
    clip = moving_pattern(frames=7, height=40, width=56)
    write_video(tmp_path / "a.mp4", clip, fps=12)
    source = open_video(tmp_path / "a.mp4")
    assert (source.width, source.height, source.num_frames) == (56, 40, 7)
    assert source.fps == pytest.approx(12)
    frames = list(source)
    assert len(frames) == 7 and frames[0].shape == (40, 56, 3) and frames[0].dtype == np.uint8
    errors = [np.abs(frames[3].astype(float) - c).mean() for c in clip]
    assert int(np.argmin(errors)) == 3 and errors[3] < 15  # lossy codec (4:2:0 chroma), same picture, in order


def test_stride_and_max_frames(tmp_path):
    write_video(tmp_path / "a.mp4", moving_pattern(frames=9), fps=10)
    assert len(list(open_video(tmp_path / "a.mp4", stride=2))) == 5
    assert len(list(open_video(tmp_path / "a.mp4", stride=2, max_frames=3))) == 3
    assert open_video(tmp_path / "a.mp4", stride=2, max_frames=3).expected_frames == 3


def test_image_folder_is_naturally_sorted(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (1, 2, 10):
        Image.fromarray(np.full((16, 20, 3), i, np.uint8)).save(folder / f"f{i}.png")
    source = open_video(folder)
    assert source.kind == "folder" and source.num_frames == 3
    assert [int(f[0, 0, 0]) for f in source] == [1, 2, 10]


def test_text_list_expands_relative_paths(tmp_path):
    (tmp_path / "list.txt").write_text("# inputs\na.mp4\n\n/abs/b.png\n")
    assert expand_inputs([tmp_path / "list.txt", "c.mov"]) == [tmp_path / "a.mp4", Path("/abs/b.png"), Path("c.mov")]


def test_mixed_sizes_are_rejected_before_decoding(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / "0.png")
    Image.fromarray(np.zeros((18, 20, 3), np.uint8)).save(folder / "1.png")
    with pytest.raises(InputError, match="different sizes"):
        open_video(folder)


def test_stream_writer_packs_an_npz_equal_to_numpy(tmp_path):
    data = np.random.default_rng(0).random((5, 7, 9, 3)).astype(np.float32)
    writer = NpyStreamWriter(tmp_path / "raw")
    for frame in data:
        writer.append(frame)
    writer.close()
    assert np.array_equal(writer.read(), data)
    writer.write_npz(tmp_path / "out.npz", "normal")
    with np.load(tmp_path / "out.npz") as npz:
        assert list(npz.keys()) == ["normal"]
        assert np.array_equal(npz["normal"], data)
