"""Training checkpoints: everything needed to continue a run exactly, written atomically.

``RUN/checkpoints/step-00001000/`` holds

- ``model.safetensors``: the trainable weights (``VideoModel.trainable_state_dict``);
- ``ema.safetensors``: their exponential moving average;
- ``optimizer.pt`` and ``scheduler.pt``: AdamW moments and step counts, learning-rate schedule position;
- ``rng-rank<R>.pt``: the Python, NumPy and PyTorch (CPU and CUDA) random states of each process;
- ``state.json``: step, elapsed training time, number of processes, package version;
- ``checksums.json``, written last: the SHA-256 of every other file, checked before resuming from it.

A checkpoint is assembled in a hidden temporary folder and renamed when complete (a killed run leaves either the
whole checkpoint or none). Weights that are not all finite are never written. Once a new checkpoint is in place,
only the newest ``keep`` checkpoints up to its step are kept: the last good checkpoint is never deleted before a
newer one is complete.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Iterable
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
PATTERN = re.compile(r"^step-(\d+)$")


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
    (tmp / CHECKSUMS_NAME).write_text(json.dumps(sums, indent=2) + "\n")


def damage(checkpoint: Checkpoint) -> str | None:
    """Why ``checkpoint`` cannot be trusted (a missing, truncated or altered file), or None when it is intact."""
    path = checkpoint.path / CHECKSUMS_NAME
    if not path.is_file():
        return _unreadable_file(checkpoint.path)
    try:
        sums = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return f"unreadable {CHECKSUMS_NAME}"
    if not isinstance(sums, dict):
        return f"unreadable {CHECKSUMS_NAME}"
    for name, digest in sums.items():
        file = checkpoint.path / name
        if not file.is_file():
            return f"{name} is missing"
        if file_sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def _unreadable_file(folder: Path) -> str | None:
    """For a checkpoint written before checksums existed: the first of its files that cannot be read, if any."""
    for file in sorted(folder.iterdir()):
        try:
            if file.suffix == ".safetensors":
                load_file(str(file))
            elif file.suffix == ".pt":
                torch.load(file, weights_only=file.name.startswith(("optimizer", "scheduler")))
        except Exception:  # any reader failure means the same here: this file cannot be resumed from
            return f"{file.name} cannot be read (a checkpoint without {CHECKSUMS_NAME})"
    return None


def all_finite(tensors: Iterable[torch.Tensor | None]) -> bool:
    """Whether no floating-point tensor holds a NaN or an infinity (None, e.g. a missing gradient, is skipped)."""
    return not count_nonfinite(t for t in tensors if t is not None)


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
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")


def write_main_state(
    tmp: Path,
    trainable: dict[str, torch.Tensor],
    ema: dict[str, torch.Tensor],
    optimizer: dict,
    scheduler: dict,
    state: dict,
) -> None:
    """The main process writes the weights, optimizer, scheduler and ``state.json`` (identical on all ranks).

    Raises InputError rather than write weights that are not all finite.
    """
    if not (all_finite(trainable.values()) and all_finite(ema.values())):
        raise InputError(f"step {state['step']}: the weights are not all finite; checkpoint not written")
    save_file({k: v.detach().cpu().contiguous() for k, v in trainable.items()}, str(tmp / "model.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in ema.items()}, str(tmp / "ema.safetensors"))
    torch.save(optimizer, tmp / "optimizer.pt")
    torch.save(scheduler, tmp / "scheduler.pt")
    (tmp / STATE_NAME).write_text(json.dumps({**state, "version": __version__}, indent=2) + "\n")


def publish(run: Path, step: int, keep: int) -> Path:
    """Rename the assembled checkpoint into place, then delete all but the newest ``keep`` up to ``step``.

    Checkpoints of later steps (left by a run resumed from an earlier, valid one) are replaced when the run
    reaches their step, not deleted before.
    """
    final = checkpoint_dir(run, step)
    replace_atomic(temporary_dir(run, step), final)
    for old in [c for c in list_checkpoints(run) if c.step <= step][:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


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
