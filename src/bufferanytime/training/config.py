"""Every option of a training run in one dataclass, with the paper's defaults.

Options are resolved in this order, later ones winning: the defaults below (from :mod:`bufferanytime.constants`),
the run's own ``RUN/config.json`` when resuming, a ``--config FILE`` (YAML or JSON mapping of option names), and
finally the command-line flags. ``None`` for ``clip_len``, ``lr`` and ``res`` means "the default of the kind"
(depth or normal), filled in by :meth:`TrainConfig.resolved`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from bufferanytime.constants import (
    ADAMW_WEIGHT_DECAY,
    CLIP_LEN_DEPTH,
    CLIP_LEN_NORMAL,
    CYCLE_TAU,
    DEFERRED_CHUNK,
    EMA_DECAY,
    LR_DEPTH,
    LR_NORMAL,
    TRAIN_BATCH_PER_PROCESS,
    TRAIN_MIN_CROP,
    TRAIN_RES_DEPTH,
    TRAIN_RES_NORMAL,
    TRAIN_STEPS,
    W_REG,
    WARMUP_STEPS,
)
from bufferanytime.errors import InputError

KINDS = ("depth", "normal")
FLOW_METHODS = ("dis", "raft-small")
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
CACHE_DTYPES = ("float32", "float16", "bfloat16")
STABLE_NORMS = ("clip", "none")
KIND_DEFAULTS = {
    "depth": {"clip_len": CLIP_LEN_DEPTH, "lr": LR_DEPTH, "res": (TRAIN_RES_DEPTH, TRAIN_RES_DEPTH)},
    "normal": {"clip_len": CLIP_LEN_NORMAL, "lr": LR_NORMAL, "res": (TRAIN_RES_NORMAL, TRAIN_RES_NORMAL)},
}
# Options that only say how a run is executed or reported: they may change when a run is resumed without
# changing what it computes.
RUNTIME_OPTIONS = frozenset(
    {"steps", "out", "resume", "cache", "workers", "save_every", "keep_checkpoints", "tensorboard", "quiet", "cpu",
     "dist_timeout", "allow_change"}
)
# Options that say nothing about the run itself: neither compared nor recorded in its history on resume.
UNRECORDED_OPTIONS = frozenset({"out", "resume", "allow_change"})
WORLD_SIZE = "world_size"  # the number of processes, recorded in each checkpoint; --allow-change world_size
HISTORY = "history"  # RUN/config.json: the options changed on each resume, [{"step", "changed": {name: [old, new]}}]
FLOAT32_MAX = 3.4028234663852886e38  # float options reach float32 tensors (the optimizer's lr): larger ones overflow
DIST_TIMEOUT = 1800.0  # seconds a process waits for the others (a collective) before the run stops with an error


@dataclass
class TrainConfig:
    """Options of ``bufferanytime train``; see ``bufferanytime train --help`` for what each one does."""

    kind: str = "depth"
    data: list[str] = field(default_factory=list)
    model: str | None = None
    out: str | None = None
    steps: int = TRAIN_STEPS
    clip_len: int | None = None
    stride: int = 1
    clips_per_video: int = 1
    res: tuple[int, int] | None = None
    min_crop: float = TRAIN_MIN_CROP
    batch_size: int = TRAIN_BATCH_PER_PROCESS
    lr: float | None = None
    weight_decay: float = ADAMW_WEIGHT_DECAY
    warmup: int = WARMUP_STEPS
    ema: float = EMA_DECAY
    w_reg: float = W_REG
    max_grad_norm: float | None = None
    flow: str = "dis"
    flow_weights: str | None = None
    tau: float = CYCLE_TAU
    edge_mask: bool = True
    stable_norm: str = "clip"
    deferred_chunk: int = DEFERRED_CHUNK
    seed: int = 0
    cache: str | None = None
    cache_dtype: str = "float32"
    save_every: int = 1000
    keep_checkpoints: int = 2
    workers: int = 2
    mixed_precision: str = "auto"
    cpu: bool = False
    tensorboard: bool = False
    copy_prior: bool = False
    resume: bool = False
    quiet: bool = False
    dist_timeout: float = DIST_TIMEOUT
    allow_change: list[str] = field(default_factory=list)

    # -- construction -----------------------------------------------------------------------------------
    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def updated(self, options: dict, source: str) -> TrainConfig:
        """A copy with ``options`` (names with ``_`` or ``-``) applied; unknown names raise InputError."""
        known = set(self.option_names())
        clean = {}
        for key, value in options.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise InputError(f"{source}: unknown option {key!r} (known: {', '.join(sorted(known))})")
            clean[name] = _coerce(name, value, source)
        return replace(self, **clean)

    def resolved(self) -> TrainConfig:
        """Fill kind-dependent defaults and check every value; raises InputError on bad values."""
        if self.kind not in KINDS:
            raise InputError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        defaults = KIND_DEFAULTS[self.kind]
        cfg = replace(
            self,
            clip_len=self.clip_len if self.clip_len is not None else defaults["clip_len"],
            lr=self.lr if self.lr is not None else defaults["lr"],
            res=tuple(self.res) if self.res is not None else defaults["res"],
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.data:
            raise InputError("no training data: pass --data DIR (one or more folders of videos or frame folders)")
        if not self.model:
            raise InputError("no model: pass --model PRIOR_OR_VIDEO_MODEL (directory or Hugging Face id)")
        if not self.out:
            raise InputError("no run directory: pass --out RUN")
        self._validate_floats()
        checks = [
            (self.steps >= 1, "--steps must be >= 1"),
            (self.clip_len >= 2, "--clip-len must be >= 2 (the stabilization loss needs frame pairs)"),
            (self.stride >= 1, "--stride must be >= 1"),
            (self.clips_per_video >= 1, "--clips-per-video must be >= 1"),
            (min(self.res) >= 8, "--res sides must be >= 8 pixels"),
            (0.0 < self.min_crop <= 1.0, "--min-crop must be in (0, 1]"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.lr > 0, "--lr must be > 0"),
            (self.weight_decay >= 0, "--weight-decay must be >= 0"),
            (self.warmup >= 0, "--warmup must be >= 0"),
            (0.0 <= self.ema < 1.0, "--ema must be in [0, 1) (0 disables the average)"),
            (self.w_reg >= 0, "--w-reg must be >= 0"),
            (self.max_grad_norm is None or self.max_grad_norm > 0, "--max-grad-norm must be > 0"),
            (self.flow in FLOW_METHODS, f"--flow must be one of {', '.join(FLOW_METHODS)}"),
            (self.flow != "raft-small" or bool(self.flow_weights), "--flow raft-small needs --flow-weights PATH"),
            (self.tau > 0, "--tau must be > 0"),
            (self.stable_norm in STABLE_NORMS, f"--stable-norm must be one of {', '.join(STABLE_NORMS)}"),
            (self.deferred_chunk >= 1, "--deferred-chunk must be >= 1"),
            (self.seed >= 0, "--seed must be >= 0"),
            (self.cache_dtype in CACHE_DTYPES, f"--cache-dtype must be one of {', '.join(CACHE_DTYPES)}"),
            (self.save_every >= 1, "--save-every must be >= 1"),
            (self.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1"),
            (self.workers >= 0, "--workers must be >= 0"),
            (self.mixed_precision in MIXED_PRECISION, f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        unknown = sorted(set(self.allow_change) - set(self.option_names()) - {WORLD_SIZE})
        if unknown:
            raise InputError(f"--allow-change: unknown option(s) {', '.join(unknown)}")

    def _validate_floats(self) -> None:
        """NaN and infinity pass comparisons like ``lr > 0`` or ``w_reg >= 0``: refuse them, and overflows, by name."""
        if not self.dist_timeout > 0:
            raise InputError("--dist-timeout must be > 0 seconds")
        for name in sorted(_FLOAT):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                raise InputError(f"--{name.replace('_', '-')} must be a finite number, got {value}")

    # -- persistence --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = asdict(self)
        out["res"] = list(self.res) if self.res is not None else None
        return out

    def changes_from(self, other: TrainConfig) -> dict[str, list]:
        """``{name: [other's value, this value]}`` for every recorded option that differs (run-time ones too)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: [theirs[k], mine[k]] for k in mine if k not in UNRECORDED_OPTIONS and mine[k] != theirs[k]}

    def refused_changes(self, changes: dict[str, list]) -> dict[str, list]:
        """The ``changes`` a resumed run may not make: neither run-time options nor named in ``allow_change``."""
        allowed = RUNTIME_OPTIONS | set(self.allow_change)
        return {k: v for k, v in changes.items() if k not in allowed}


def format_changes(changes: dict[str, list]) -> str:
    """``lr: 0.001 -> 0.002, world_size: 1 -> 2``."""
    return ", ".join(f"{name}: {old} -> {new}" for name, (old, new) in changes.items())


def read_run_config(path: str | Path) -> tuple[dict, list]:
    """The options and the history (see ``HISTORY``) saved in a run's ``config.json``; InputError when unreadable."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable run config ({type(exc).__name__})") from exc
    if not isinstance(saved, dict):
        raise InputError(f"{path}: unreadable run config (not a mapping)")
    history = saved.pop(HISTORY, [])
    return saved, history if isinstance(history, list) else []


def read_config_file(path: str | Path) -> dict:
    """Options from a YAML or JSON file holding one mapping; InputError when unreadable or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such config file")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot parse config ({type(exc).__name__})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a config file must hold a mapping of option names to values")
    return data


def parse_res(value) -> tuple[int, int]:
    """``518``, ``"518"``, ``"294x518"`` or ``[294, 518]`` -> ``(H, W)``."""
    try:
        if isinstance(value, int | float):
            return int(value), int(value)
        if isinstance(value, list | tuple) and len(value) == 2:
            return int(value[0]), int(value[1])
        text = str(value).lower().strip()
        if "x" in text:
            h, w = text.split("x")
            return int(h), int(w)
        return int(text), int(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"bad resolution {value!r}: expected N or HxW (e.g. 518 or 294x518)") from exc


_INT = {"steps", "clip_len", "stride", "clips_per_video", "batch_size", "warmup", "deferred_chunk", "seed",
        "save_every", "keep_checkpoints", "workers"}
_FLOAT = {"min_crop", "lr", "weight_decay", "ema", "w_reg", "max_grad_norm", "tau", "dist_timeout"}
_BOOL = {"edge_mask", "cpu", "tensorboard", "copy_prior", "resume", "quiet"}
_OPTIONAL = {"clip_len", "lr", "res", "max_grad_norm", "flow_weights", "cache", "model", "out"}


def _coerce(name: str, value, source: str):
    """Type-check a value from a config file (the CLI's argparse already types its own)."""
    if value is None:
        if name in _OPTIONAL:
            return None
        raise InputError(f"{source}: option {name!r} cannot be null")
    try:
        if name == "res":
            return parse_res(value)
        if name in ("data", "allow_change"):
            return [str(v) for v in value] if isinstance(value, list | tuple) else [str(value)]
        if name in _BOOL:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if name in _INT:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if name in _FLOAT:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: bad value {value!r} for option {name!r}") from exc
