"""MODEL_DIR: the model written as the trainer writes its final model, and ``adapt.json``, the record of the run.

``adapt.json`` holds ``bufferanytime_adapt`` (the format version, which marks the folder as an adapt result),
``result`` (``adapted``, or ``kept_base`` with a ``reason``), the base model, the inputs (names and content
hashes), the settings chosen and why, the split, the validation curve, the before/after figures of the guard
rails, the hardware and the date. The folder is written under a temporary name and renamed into place whole
(:func:`bufferanytime.io.atomic.atomic_path`): an interrupted write leaves the previous folder or nothing.

An existing MODEL_DIR is replaced only when it is an adapt result (it has an ``adapt.json`` with the marker), holds
the checkpoints of an adaptation (:mod:`~bufferanytime.adapt.resume`; then only with ``--resume``) or is an empty
folder; anything else is refused before any work starts.
"""

from __future__ import annotations

import json
import math
import os
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from bufferanytime import __version__
from bufferanytime.errors import InputError
from bufferanytime.io.atomic import atomic_path
from bufferanytime.models.base import VideoModel

RECORD_NAME = "adapt.json"
RECORD_MARK = "bufferanytime_adapt"
RECORD_VERSION = 1
ADAPTED, KEPT_BASE = "adapted", "kept_base"


def is_adapt_result(path: Path) -> bool:
    """Whether ``path`` is a folder written by adapt (its ``adapt.json`` carries the marker)."""
    try:
        record = json.loads((path / RECORD_NAME).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and RECORD_MARK in record


def check_output(out: Path, base: str | Path | None = None) -> None:
    """InputError unless ``out`` can be written: missing, an empty folder, or an earlier adapt result; and not
    the base model's own folder (which the result would replace)."""
    out = Path(out)
    if base is not None and Path(base).exists() and out.exists() and out.resolve() == Path(base).resolve():
        raise InputError(f"-o {out}: the same folder as --model; write the adapted model to another folder")
    if not out.exists():
        for parent in out.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(f"-o {out}: {parent} is a file, not a folder")
                break
        return
    if not out.is_dir():
        raise InputError(f"-o {out}: a file is there, not a model folder; pass another -o")
    from bufferanytime.adapt.resume import has_run

    if any(out.iterdir()) and not is_adapt_result(out) and not has_run(out):
        raise InputError(f"-o {out}: the folder exists and is not an adapt result (no {RECORD_NAME}); refusing to "
                         "overwrite it: pass another -o, or remove it")


def hardware(device: torch.device) -> dict:
    """The machine the run measured its steps on."""
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_record(kind: str, base: dict) -> dict:
    return {RECORD_MARK: RECORD_VERSION, "version": __version__, "kind": kind, "date": now(), "base_model": base}


def write_model_dir(out: Path, model: VideoModel, record: dict, copy_prior: bool = False,
                    keep_checkpoints: bool = False) -> None:
    """Write the model (trainable weights and config, as ``train`` writes ``RUN/model``) and ``adapt.json`` into
    ``out``, whole or not at all; with ``keep_checkpoints``, the run's checkpoints in ``out`` are kept in it."""
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, copy_prior=copy_prior)
        (tmp / RECORD_NAME).write_text(json.dumps(finite(record), indent=2, default=_plain) + "\n")
        if keep_checkpoints:
            from bufferanytime.adapt.resume import carry

            carry(out, tmp)


def summary(record: dict) -> dict:
    """What a prediction's meta file (``depth --adapt``) and the app show of an adaptation: the budget, the result,
    the steps, the guard rails' verdict and the figures before and after on the held-out footage."""
    guard = record.get("guard") or {}
    before, after = guard.get("before") or {}, guard.get("after") or {}
    return {"budget": record["budget"]["text"], "base_model": record["base_model"]["ref"],
            "result": record["result"], "reason": record.get("reason"),
            "steps": (record.get("validation") or {}).get("steps_done", 0), "guard_passed": guard.get("passed"),
            "opw_before": before.get("opw"), "opw_after": after.get("opw"),
            "prior_distance_before": before.get("prior_distance"), "prior_distance_after": after.get("prior_distance")}


def finite(value):
    """``value`` with every non-finite float (NaN, infinity) as None: what JSON can hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
