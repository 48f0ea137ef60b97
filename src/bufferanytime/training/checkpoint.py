"""Training checkpoints: everything needed to continue a run exactly, written atomically.

``RUN/checkpoints/step-00001000/`` holds

- ``model.safetensors``: the trainable weights (``VideoModel.trainable_state_dict``);
- ``ema.safetensors``: their exponential moving average;
- ``optimizer.pt`` and ``scheduler.pt``: AdamW moments and step counts, learning-rate schedule position;
- ``rng-rank<R>.pt``: the Python, NumPy and PyTorch (CPU and CUDA) random states of each process;
- ``state.json``: step, elapsed training time, number of processes, package version, checkpoint format, and the
  run's record at that step: its options, their history and the content digest of its data;
- ``log.jsonl``: the run's log up to that step (what repairs a ``RUN/log.jsonl`` cut short);
- ``checksums.json``, written last: the SHA-256 of every other file, checked before resuming from it.

A checkpoint is assembled in a hidden temporary folder and renamed when complete (a killed run leaves either the
whole checkpoint or none). Weights or optimizer moments that are not all finite are never written. Once a new
checkpoint is in place, only the newest ``keep`` checkpoints up to its step are kept: the last good checkpoint is
never deleted before a newer one is complete, and an old one is renamed to a hidden ``.del-step-N`` before it is
deleted, so a kill in between leaves nothing that looks like a checkpoint (the next run removes it).

A checkpoint of format 2 or later (``state.json``'s ``format``) is trusted only with a ``checksums.json`` that
covers all its files; one without ``format`` predates it, and without checksums it is only checked for readable
files, with a warning that it cannot be verified.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bufferanytime import __version__
from bufferanytime.errors import InputError
from bufferanytime.io.atomic import replace_atomic
from bufferanytime.models.base import count_nonfinite
from bufferanytime.training.hashing import file_sha256

CHECKPOINTS = "checkpoints"
STATE_NAME = "state.json"
CHECKSUMS_NAME = "checksums.json"
LOG_COPY = "log.jsonl"  # the run's log up to the checkpoint's step
PATTERN = re.compile(r"^step-(\d+)$")
FORMAT = 2  # state.json "format": 2 = checksums.json required, options and data digest carried
# The files every checkpoint holds (rng-rank<R>.pt and log.jsonl besides): without one it cannot be resumed from.
REQUIRED = ("model.safetensors", "ema.safetensors", "optimizer.pt", "scheduler.pt", STATE_NAME)
_KNOWN = re.compile(r"^(model\.safetensors|ema\.safetensors|optimizer\.pt|scheduler\.pt|state\.json|log\.jsonl|"
                    r"checksums\.json|rng-rank\d+\.pt)$")
# Hidden leftovers of a killed run in RUN/checkpoints: a checkpoint being assembled, deleted, or replaced.
_STALE = re.compile(r"^\.(tmp-step-\d+|del-step-\d+|step-\d+\.old-\d+)$")
NO_CHECKSUMS = "no checksums.json"  # damage() of a checkpoint older than FORMAT 2 without checksums: usable, unverified


@dataclass
class Checkpoint:
    path: Path
    step: int
    state: dict


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(run: Path) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    root = run / CHECKPOINTS
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = PATTERN.match(path.name)
            if match and (path / STATE_NAME).is_file():
                found.append(Checkpoint(path, int(match.group(1)), _read_state(path / STATE_NAME)))
    return sorted(found, key=lambda c: c.step)


def _read_state(path: Path) -> dict:
    """``state.json``, or ``{}`` when damaged (then :func:`damage` tells why the checkpoint is unusable)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def latest_checkpoint(run: Path) -> Checkpoint | None:
    found = list_checkpoints(run)
    return found[-1] if found else None


def write_checksums(tmp: Path) -> None:
    """Record the SHA-256 of every file of the assembled checkpoint (called last, once every file is written)."""
    sums = {f.name: file_sha256(f) for f in sorted(tmp.iterdir()) if f.is_file() and f.name != CHECKSUMS_NAME}
    text = json.dumps(sums, indent=2) + "\n"
    saving(tmp / CHECKSUMS_NAME, lambda path: path.write_text(text))


def damage(checkpoint: Checkpoint) -> str | None:
    """Why ``checkpoint`` cannot be trusted (a missing, truncated or altered file, missing or incomplete
    checksums), or None when it can (see :func:`unverified` for an old checkpoint without checksums)."""
    path = checkpoint.path / CHECKSUMS_NAME
    if not path.is_file():
        missing = _missing_file(checkpoint.path)
        if missing is not None:
            return missing
        if not unverified(checkpoint):
            return f"{CHECKSUMS_NAME} is missing"
        return _unreadable_file(checkpoint.path)
    try:
        sums = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"unreadable {CHECKSUMS_NAME}"
    if not isinstance(sums, dict):
        return f"unreadable {CHECKSUMS_NAME}"
    if not sums:
        return f"{CHECKSUMS_NAME} lists no file"
    missing = _missing_file(checkpoint.path)
    if missing is not None:
        return missing
    for file in sorted(checkpoint.path.iterdir()):
        if file.name != CHECKSUMS_NAME and file.name not in sums:
            return f"{file.name} has no checksum in {CHECKSUMS_NAME}"
    for name, digest in sums.items():
        file = checkpoint.path / str(name)
        if not file.is_file():
            return f"{name} is missing"
        if file_sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def unverified(checkpoint: Checkpoint) -> bool:
    """Whether ``checkpoint`` has no checksums and predates them (no ``format`` in its ``state.json``): it can
    only be checked for readable files, which :func:`damage` then does."""
    return not (checkpoint.path / CHECKSUMS_NAME).is_file() and "format" not in checkpoint.state


def _missing_file(folder: Path) -> str | None:
    """``NAME is missing`` for the first file every checkpoint holds that ``folder`` lacks."""
    for name in REQUIRED:
        if not (folder / name).is_file():
            return f"{name} is missing"
    return None


def _unreadable_file(folder: Path) -> str | None:
    """For a checkpoint written before checksums existed: the first of its files that cannot be read, if any."""
    for file in sorted(folder.iterdir()):
        try:
            if file.suffix == ".safetensors":
                load_file(str(file))
            elif file.suffix == ".pt":
                torch.load(file, weights_only=file.name.startswith(("optimizer", "scheduler")))
            elif file.name == STATE_NAME and not isinstance(json.loads(file.read_text()), dict):
                raise ValueError(file.name)
        except Exception:  # any reader failure means the same here: this file cannot be resumed from
            return f"{file.name} cannot be read (a checkpoint without {CHECKSUMS_NAME})"
    return None


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether no floating-point tensor holds a NaN or an infinity (None, e.g. a missing gradient, is skipped)."""
    return not count_nonfinite(t for t in tensors if t is not None)


def nested_tensors(value) -> Iterable[torch.Tensor]:
    """Every tensor in a nested state (an optimizer's ``state_dict``: its moments per parameter)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from nested_tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from nested_tensors(item)


def saving(path: Path, write: Callable[[Path], None]) -> None:
    """``write(path)``, with a failure of the file system raised as the OSError it is, naming ``path``.

    safetensors reports a full disk as ``SafetensorError(... (os error 28))`` and ``torch.save`` as a
    ``RuntimeError`` about a short write: both become ``OSError(ENOSPC, ..., path)`` (the code from the message,
    or ENOSPC when the file system has no space left), so that the command reports them in one line.
    """
    try:
        write(path)
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, os.strerror(exc.errno), str(path)) from exc
        raise
    except Exception as exc:
        code = _os_error_code(exc, path)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), str(path)) from exc


def _os_error_code(exc: Exception, path: Path) -> int | None:
    """The errno behind a library's write error: named in its message (Rust's ``os error N``), or ENOSPC when
    the file system of ``path`` has no block left; None when neither holds (a genuine bug, left to surface)."""
    found = re.search(r"os error (\d+)", str(exc))
    if found:
        return int(found.group(1))
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return None
    return errno.ENOSPC if stats.f_bavail == 0 else None


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def temporary_dir(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f".tmp-step-{step:08d}"


def write_rank_state(tmp: Path, rank: int) -> None:
    """Every process writes its own random states into the checkpoint being assembled (RUN is expected on a
    filesystem shared by all nodes; elsewhere the folder is created so that a node's write cannot fail)."""
    tmp.mkdir(parents=True, exist_ok=True)
    state = rng_state()
    saving(tmp / f"rng-rank{rank}.pt", lambda path: torch.save(state, path))


def write_main_state(
    tmp: Path,
    trainable: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict,
    scheduler: dict,
    state: dict,
) -> None:
    """The main process writes the weights, optimizer, scheduler and ``state.json`` (identical on all ranks).

    Raises InputError rather than write weights or optimizer moments that are not all finite, and OSError naming
    the file on a file-system failure (a full disk).
    """
    if not (all_finite(trainable.values()) and all_finite(ema.values())):
        raise InputError(f"step {state['step']}: the weights are not all finite; checkpoint not written")
    if not all_finite(nested_tensors(optimizer)):
        raise InputError(f"step {state['step']}: the optimizer's moments are not all finite; checkpoint not written")
    weights = {k: v.detach().cpu().contiguous() for k, v in trainable.items()}
    saving(tmp / "model.safetensors", lambda path: save_file(weights, str(path)))
    average = {k: v.detach().cpu().contiguous() for k, v in ema.items()}
    saving(tmp / "ema.safetensors", lambda path: save_file(average, str(path)))
    saving(tmp / "optimizer.pt", lambda path: torch.save(optimizer, path))
    saving(tmp / "scheduler.pt", lambda path: torch.save(scheduler, path))
    text = json.dumps({**state, "format": FORMAT, "version": __version__}, indent=2) + "\n"
    saving(tmp / STATE_NAME, lambda path: path.write_text(text))


def copy_log(tmp: Path, log: Path) -> None:
    """Keep the run's log up to the checkpoint's step in the checkpoint (the main process, before checksums)."""
    if log.is_file():
        saving(tmp / LOG_COPY, lambda path: shutil.copyfile(log, path))


def publish(run: Path, step: int, keep: int) -> Path:
    """Rename the assembled checkpoint into place, then delete all but the newest ``keep`` up to ``step``.

    Checkpoints of later steps (left by a run resumed from an earlier, valid one) are replaced when the run
    reaches their step, not deleted before.
    """
    final = checkpoint_dir(run, step)
    replace_atomic(temporary_dir(run, step), final)
    for old in [c for c in list_checkpoints(run) if c.step <= step][:-keep]:
        doomed = old.path.with_name(f".del-{old.path.name}")
        old.path.rename(doomed)  # no longer a checkpoint, even if the deletion below is cut short
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def remove_stale(run: Path) -> list[Path]:
    """Remove what killed runs left in ``RUN/checkpoints`` (the caller holds the run's lock): checkpoints being
    assembled, deleted or replaced, and ``step-N`` folders without ``state.json`` holding only checkpoint files
    (a deletion cut short by an earlier version). Returns what was removed."""
    root = run / CHECKPOINTS
    removed = []
    if not root.is_dir():
        return removed
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        stale = _STALE.match(path.name) is not None
        if PATTERN.match(path.name) and not (path / STATE_NAME).exists():
            stale = all(_KNOWN.match(f.name) and f.is_file() for f in path.iterdir())
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def load_checkpoint(checkpoint: Checkpoint, rank: int, device: torch.device) -> dict:
    """Everything a process needs to resume from ``checkpoint`` (random states only if saved for ``rank``)."""
    path = checkpoint.path
    rng_file = path / f"rng-rank{rank}.pt"
    return {
        "trainable": load_file(str(path / "model.safetensors"), device=str(device)),
        "ema": load_file(str(path / "ema.safetensors")),
        "optimizer": torch.load(path / "optimizer.pt", map_location=device, weights_only=True),
        "scheduler": torch.load(path / "scheduler.pt", weights_only=True),
        "rng": torch.load(rng_file, weights_only=False) if rng_file.is_file() else None,
        "state": checkpoint.state,
    }
