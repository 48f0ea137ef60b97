"""Checkpoints of an adaptation, so that ``--resume`` continues an interrupted run instead of starting over.

They are the trainer's checkpoints (:mod:`bufferanytime.training.checkpoint`), in ``MODEL_DIR/checkpoints/step-N/``
with the same files and checksums: the trained weights (``model.safetensors``), the optimizer and schedule, the
random states, and ``state.json``. Adapt keeps no moving average: the weights it would keep, the best by
validation loss so far, take the average's place (``ema.safetensors``). ``state.json`` holds, under ``adapt``,
everything else the run needs to continue: its record so far (inputs, split, settings, the starting model's
figures), the validation curve, the clip order and where it is, and the elapsed time (a time budget continues
with what is left of it).

A checkpoint is written at every validation, the previous one removed once the new one is complete. A finished
run leaves none (MODEL_DIR is written whole without them); a run stopped by Ctrl-C or SIGTERM writes the best model
so far and keeps its newest checkpoint beside it; a killed run leaves MODEL_DIR with its checkpoints only. Either
way MODEL_DIR then holds an interrupted run, which a new run refuses to replace unless told ``--resume``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from bufferanytime.errors import InputError
from bufferanytime.training import checkpoint as ckpt
from bufferanytime.training.config import WORLD_SIZE

STATE_KEY = "adapt"  # state.json's key of the adaptation's own state: what marks a checkpoint as adapt's
KEEP = 1  # checkpoints kept: the newest (the previous one is removed once it is complete)
# Options a resumed run takes from the interrupted one; given again with another value, the resume is refused.
RESUMED_OPTIONS = ("lr", "w_reg", "seed", "flow", "tolerance")


def interrupted_run(out: Path) -> ckpt.Checkpoint | None:
    """The newest adapt checkpoint in ``out`` whose files match their checksums (None: no interrupted run)."""
    for found in reversed(ckpt.list_checkpoints(Path(out))):
        if isinstance(found.state.get(STATE_KEY), dict) and ckpt.damage(found) is None:
            return found
    return None


def has_run(out: Path) -> bool:
    """Whether ``out`` holds checkpoints of an adaptation (valid or not): an interrupted run."""
    return any(isinstance(c.state.get(STATE_KEY), dict) for c in ckpt.list_checkpoints(Path(out)))


def refuse_unless_resumed(out: Path, resume: bool) -> None:
    """InputError when ``out`` holds an interrupted run and ``resume`` is not asked for (it would be lost)."""
    if resume or not Path(out).is_dir():
        return
    found = [c for c in ckpt.list_checkpoints(Path(out)) if isinstance(c.state.get(STATE_KEY), dict)]
    if found:
        raise InputError(f"-o {out}: holds an interrupted adapt run (checkpoint at step {found[-1].step}); pass "
                         "--resume to continue it, or remove the folder to start over")


def save(out: Path, step: int, elapsed: float, model_state: dict[str, torch.Tensor],
         best_state: dict[str, torch.Tensor], optimizer, scheduler, state: dict) -> None:
    """Write the checkpoint of ``step`` into ``out/checkpoints`` whole (assembled aside, checksummed, renamed),
    then remove the older ones. ``state``: the run's own state, JSON-ready."""
    tmp = ckpt.temporary_dir(out, step)
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        ckpt.write_rank_state(tmp, 0)
        ckpt.write_main_state(tmp, model_state, best_state, optimizer.state_dict(), scheduler.state_dict(),
                              {"step": step, "elapsed": elapsed, WORLD_SIZE: 1, STATE_KEY: state})
        ckpt.write_checksums(tmp)
        ckpt.publish(out, step, KEEP)
    except BaseException:  # a full disk, a kill: no half-assembled checkpoint stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(found: ckpt.Checkpoint, device: torch.device) -> dict:
    """What :func:`bufferanytime.training.checkpoint.load_checkpoint` reads, the random states restored."""
    loaded = ckpt.load_checkpoint(found, 0, device)
    if loaded["rng"] is not None:
        ckpt.set_rng_state(loaded["rng"])
    return loaded


def check_same_run(recorded: dict, base_sha: str, inputs: list[dict], kind: str) -> None:
    """InputError when the run resumed was made with another kind, starting model or footage."""
    changes = []
    if recorded.get("kind") != kind:
        changes.append(f"kind {recorded.get('kind')} -> {kind}")
    if recorded.get("base_model", {}).get("weights_sha256") != base_sha:
        changes.append("another starting model")
    if [i.get("sha256") for i in recorded.get("inputs", [])] != [i["sha256"] for i in inputs]:
        changes.append("other inputs")
    if changes:
        raise InputError(f"--resume: the interrupted run was made with other data ({', '.join(changes)}); pass "
                         "the same inputs and --model, or another -o")


def resolved_options(given: dict, recorded: dict) -> dict:
    """The options of a resumed run: the recorded ones; InputError naming any given again with another value."""
    changed = [f"{name} {recorded[name]} -> {given[name]}" for name in RESUMED_OPTIONS
               if given.get(name) is not None and name in recorded and given[name] != recorded[name]]
    if changed:
        raise InputError(f"--resume with changed options ({', '.join(changed)}); the run continues with its own: "
                         "leave them out")
    return {**given, **{name: recorded[name] for name in RESUMED_OPTIONS if name in recorded}}


def carry(out: Path, into: Path) -> None:
    """Copy ``out``'s checkpoints into ``into`` (a MODEL_DIR being assembled), as hard links where possible: the
    originals stay until ``into`` replaces ``out``, so a kill in between loses nothing."""
    source = Path(out) / ckpt.CHECKPOINTS
    if source.is_dir():
        shutil.copytree(source, Path(into) / ckpt.CHECKPOINTS, copy_function=_link_or_copy,
                        ignore=shutil.ignore_patterns(".*"))


def _link_or_copy(src: str, dst: str) -> None:
    try:
        Path(dst).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dst)


def to_json(value) -> dict:
    """``value`` as JSON would give it back (non-finite floats as None, paths as text)."""
    from bufferanytime.adapt.record import _plain, finite

    return json.loads(json.dumps(finite(value), default=_plain))
