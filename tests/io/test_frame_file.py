"""Second passes over written predictions: one frame at a time, the same values as the whole array."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from bufferanytime.io.outputs import NpyStreamWriter, robust_range, strided_sample


def _written(tmp_path, frames: np.ndarray) -> NpyStreamWriter:
    writer = NpyStreamWriter(tmp_path / "predictions.raw")
    for frame in frames:
        writer.append(frame)
    writer.close()
    return writer


@pytest.mark.parametrize("shape", [(7, 5, 6), (3, 4, 5, 3), (1, 2, 2)])
def test_frame_file_gives_the_frames_as_written(tmp_path, shape):
    frames = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    data = _written(tmp_path, frames).frames()
    assert data.shape == shape and len(data) == shape[0]
    assert np.array_equal(np.stack(list(data)), frames)
    assert np.array_equal(data[-1], frames[-1]) and np.array_equal(data[0], frames[0])
    data[0][:] = 0  # each frame is its own writable copy
    assert np.array_equal(data[0], frames[0])
    with pytest.raises(IndexError):
        data[shape[0]]


def test_a_file_shorter_than_its_shape_is_an_error(tmp_path):
    writer = _written(tmp_path, np.ones((3, 4, 4), np.float32))
    with open(writer.raw_path, "r+b") as raw:
        raw.truncate(2 * 4 * 4 * 4 + 8)
    with pytest.raises(OSError, match="ends before"):
        list(writer.frames())


@pytest.mark.parametrize(("count", "max_values"), [(9, 50), (9, 7), (4, 10_000), (13, 33)])
def test_strided_sample_frame_by_frame_equals_the_flat_stride(tmp_path, count, max_values):
    frames = np.random.default_rng(count).normal(size=(count, 5, 7)).astype(np.float32)
    data = _written(tmp_path, frames).frames()
    step = max(1, int(np.ceil(frames.size / max_values)))
    expected = frames.reshape(-1)[::step]
    assert np.array_equal(strided_sample(data, max_values), expected)
    assert np.array_equal(strided_sample(frames, max_values), expected)
    assert strided_sample(data, max_values).size <= max_values


def test_visualisation_range_is_the_same_from_the_file_and_from_memory(tmp_path):
    frames = np.random.default_rng(1).gamma(2.0, size=(6, 30, 40)).astype(np.float32)
    frames[2, :5] = np.nan
    assert robust_range(_written(tmp_path, frames).frames()) == robust_range(frames)


def test_sampling_a_long_file_holds_about_one_frame_not_the_video(tmp_path):
    frames = np.random.default_rng(2).random((400, 64, 64), dtype=np.float32)
    data = _written(tmp_path, frames).frames()
    tracemalloc.start()
    try:
        strided_sample(data, 4000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * frames[0].nbytes, f"{peak / frames[0].nbytes:.0f} frames' worth held"
