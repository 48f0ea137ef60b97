import dataclasses

import torch

from bufferanytime.training.cache import ClipCache
from bufferanytime.training.data import ClipSpec

SPEC = ClipSpec("/videos/a.mp4", "file:10:20", start=3, stride=1, length=4, crop=(0, 0, 32, 24), res=(24, 32))
CONTEXT = {"kind": "depth", "prior": "/p", "flow": "dis", "flow_weights": None, "tau": 0.34, "precision": "no"}


def _tensors():
    torch.manual_seed(0)
    return {
        "features.0": torch.randn(4, 5, 8),
        "flow_fwd": torch.randn(3, 2, 24, 32),
        "cycle_fwd": torch.rand(3, 24, 32) > 0.5,
        "target_frames": torch.arange(4),
    }


def test_round_trip_and_atomic_files(tmp_path):
    cache = ClipCache(tmp_path, CONTEXT)
    assert cache.load(SPEC) is None
    cache.save(SPEC, _tensors())
    loaded = cache.load(SPEC)
    for name, value in _tensors().items():
        assert loaded[name].dtype == value.dtype and torch.equal(loaded[name], value)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and not files[0].name.startswith(".")  # no temporary file left behind


def test_key_depends_on_clip_and_context(tmp_path):
    cache = ClipCache(tmp_path, CONTEXT)
    cache.save(SPEC, _tensors())
    assert cache.load(dataclasses.replace(SPEC, start=4)) is None
    assert cache.load(dataclasses.replace(SPEC, signature="file:10:21")) is None  # the video changed
    assert ClipCache(tmp_path, {**CONTEXT, "flow": "raft-small"}).load(SPEC) is None
    assert ClipCache(tmp_path, {**CONTEXT, "prior": "/other"}).load(SPEC) is None
    assert ClipCache(tmp_path, CONTEXT).load(SPEC) is not None  # shared by runs with the same context


def test_reduced_precision_keeps_flows_exact(tmp_path):
    cache = ClipCache(tmp_path, CONTEXT, dtype="float16")
    cache.save(SPEC, _tensors())
    loaded = cache.load(SPEC)
    assert loaded["features.0"].dtype == torch.float16
    assert loaded["flow_fwd"].dtype == torch.float32 and torch.equal(loaded["flow_fwd"], _tensors()["flow_fwd"])


def test_damaged_entry_is_a_miss(tmp_path):
    cache = ClipCache(tmp_path, CONTEXT)
    cache.save(SPEC, _tensors())
    cache.path(SPEC).write_bytes(b"not a safetensors file")
    assert cache.load(SPEC) is None
