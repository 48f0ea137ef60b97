"""The clip cache under faults: entries swapped or rewritten with other tensors are misses (recomputed and
replaced), ``--cache FILE`` and a full disk while writing an entry are one ``error:`` line with nothing partial."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bufferanytime.cli.main import main
from bufferanytime.training import cache as cache_module
from bufferanytime.training import train
from bufferanytime.training.cache import ClipCache
from tests.helpers import files_under

from .conftest import tiny_config
from .test_cache import CONTEXT, SPEC, _tensors

OTHER = dataclasses.replace(SPEC, start=4)


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.safetensors"))


def _metadata(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as entry:
        return entry.metadata()


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


# -- entries that are not the clip's ----------------------------------------------------------------------------


def test_swapped_entries_are_misses_and_are_replaced_when_saved_again(tmp_path, capsys):
    cache = ClipCache(tmp_path, CONTEXT)
    cache.save(SPEC, _tensors())
    cache.save(OTHER, {k: v + 1 if v.is_floating_point() else v for k, v in _tensors().items()})
    a, b = cache.path(SPEC), cache.path(OTHER)
    swap = a.with_name("swap")
    a.rename(swap), b.rename(a), swap.rename(b)
    assert cache.load(SPEC) is None and cache.load(OTHER) is None
    lines = _warnings(capsys)
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "computed again" in lines[0], lines  # once
    cache.save(SPEC, _tensors())  # what a miss leads to: the entry is overwritten with the clip's own tensors
    assert torch.equal(cache.load(SPEC)["features.0"], _tensors()["features.0"])
    assert json.loads(_metadata(a)["clip"]) == json.loads(json.dumps(SPEC.to_dict(), default=list))


def test_valid_safetensors_with_other_shapes_is_a_miss(tmp_path, capsys):
    cache = ClipCache(tmp_path, CONTEXT)
    cache.save(SPEC, _tensors())
    path = cache.path(SPEC)
    metadata = _metadata(path)
    wrong = {**_tensors(), "features.0": torch.zeros(2, 3)}
    save_file(wrong, str(path), metadata=metadata)  # even with the entry's own key, clip and layout
    assert cache.load(SPEC) is None
    save_file(wrong, str(path))  # and with no metadata at all
    assert cache.load(SPEC) is None
    assert len(_warnings(capsys)) == 1


def test_entry_of_the_earlier_format_is_a_silent_miss(tmp_path, capsys):
    cache = ClipCache(tmp_path, CONTEXT)
    cache.save(SPEC, _tensors())
    save_file(_tensors(), str(cache.path(SPEC)), metadata={"clip": _metadata(cache.path(SPEC))["clip"]})
    assert cache.load(SPEC) is None and _warnings(capsys) == []


def _first_step(data, prior, run: Path, cache: Path) -> dict:
    train(tiny_config(data, prior, run, steps=1, cache=str(cache)))
    return json.loads((run / "log.jsonl").read_text().splitlines()[0])


def test_training_recomputes_swapped_and_reshaped_entries(flicker_data, tiny_depth_prior, tmp_path, capsys):
    """A fresh video model is its prior: the regularization loss is zero unless the targets are another clip's."""
    cache = tmp_path / "cache"
    train(tiny_config(flicker_data, tiny_depth_prior, tmp_path / "a", steps=2, cache=str(cache)))
    first, second = (json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines())
    assert first["cache_hits"] == second["cache_hits"] == 0 and first["clips"] != second["clips"]
    entries = _entries(cache)
    assert len(entries) == 2
    swap = entries[0].with_name("swap")
    entries[0].rename(swap), entries[1].rename(entries[0]), swap.rename(entries[1])
    capsys.readouterr()

    swapped = _first_step(flicker_data, tiny_depth_prior, tmp_path / "b", cache)
    assert swapped["cache_hits"] == 0 and swapped["loss_reg"] < 1e-8, swapped
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert _first_step(flicker_data, tiny_depth_prior, tmp_path / "c", cache)["cache_hits"] == 1  # replaced

    for entry in _entries(cache):  # valid safetensors, other shapes, the entry's own metadata
        tensors = {name: torch.zeros(1, 2) for name in safe_open(str(entry), framework="pt").keys()}  # noqa: SIM118
        save_file(tensors, str(entry), metadata=_metadata(entry))
    reshaped = _first_step(flicker_data, tiny_depth_prior, tmp_path / "d", cache)
    assert reshaped["cache_hits"] == 0 and reshaped["loss_reg"] < 1e-8, reshaped
    assert (tmp_path / "d" / "model" / "model.safetensors").is_file()


# -- the cache folder and a full disk ---------------------------------------------------------------------------


def _cli(data: Path, model: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "depth", "--data", str(data), "--model", str(model), "--out", str(run), "--clip-len", "4",
            "--res", "42x56", "--warmup", "0", "--lr", "1e-3", "--workers", "0", "--no-edge-mask", "--cpu", "-q",
            *extra]


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_cache_that_is_a_file_is_one_error_line_before_anything_is_written(flicker_data, tiny_depth_prior,
                                                                           tmp_path, capsys, where):
    file = tmp_path / "notes.txt"
    file.write_text("mine\n")
    cache = file if where == "file" else file / "cache"
    run = tmp_path / "run"
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "1", "--cache", str(cache)))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {cache}: ") and "folder" in lines[0], lines
    assert not run.exists() and file.read_text() == "mine\n"


def test_full_disk_while_writing_an_entry_is_one_error_line_and_leaves_no_partial_entry(
    flicker_data, tiny_depth_prior, tmp_path, capsys, monkeypatch
):
    def full(path: Path, data: bytes) -> None:
        with path.open("wb") as file:  # half of it fits
            file.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a write on an open file names no path

    monkeypatch.setattr(cache_module, "write_entry", full)
    cache, run = tmp_path / "cache", tmp_path / "run"
    code = main(_cli(flicker_data, tiny_depth_prior, run, "--steps", "2", "--cache", str(cache)))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and lines == [f"error: {cache}: no space left on device"], lines
    assert files_under(cache) == []  # no entry and no temporary
    assert not (run / "model").exists() and not (run / "summary.json").exists()
