"""Every option of a training run in one dataclass, with the paper's defaults, each declared in one place.

An option is one field of :class:`TrainConfig`: its type, default (from :mod:`bufferanytime.constants` when the
paper gives it), help, check and choices (:func:`~bufferanytime.training.options.option`). The flag of
``bufferanytime train``, the key of a config file, the coercion of its value, the validation with an error that
names the flag, the help with its default, and whether it may change on ``--resume`` all follow from that field.

Options are resolved in this order, later ones winning: the defaults below, the run's own ``RUN/config.json``
when resuming, a ``--config FILE`` (YAML or JSON mapping of option names), and finally the command-line flags.
``None`` for ``clip_len``, ``lr`` and ``res`` means "the default of the kind" (the ``defaults`` of its
objective, :mod:`~bufferanytime.training.objectives`), filled in by :meth:`TrainConfig.resolved`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from bufferanytime.constants import (
    ADAMW_WEIGHT_DECAY,
    CYCLE_TAU,
    DEFERRED_CHUNK,
    EMA_DECAY,
    TRAIN_BATCH_PER_PROCESS,
    TRAIN_MIN_CROP,
    TRAIN_STEPS,
    W_REG,
    WARMUP_STEPS,
)
from bufferanytime.errors import InputError
from bufferanytime.flow import list_flows
from bufferanytime.tasks import DEPTH, list_tasks
from bufferanytime.training.cache import DTYPES as CACHE_DTYPES
from bufferanytime.training.objectives import objective_class
from bufferanytime.training.options import Check, above, at_least, between, check_values, coerce, info, option

KINDS = tuple(list_tasks())  # the kinds of buffer a video model can be trained for
FLOW_METHODS = tuple(list_flows())
WEIGHTED_FLOWS = ("raft-small",)  # flow methods that read --flow-weights
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
STABLE_NORMS = ("clip", "none")
RUN_CONFIG = "config.json"  # RUN/config.json: every option of the run, and its HISTORY
WORLD_SIZE = "world_size"  # the number of processes, recorded in each checkpoint; --allow-change world_size
HISTORY = "history"  # RUN/config.json: the options changed on each resume, [{"step", "changed": {name: [old, new]}}]
# RUN/config.json and each checkpoint: {"videos": N, "sha256": digest} of the videos under --data (a change of their
# content is refused on --resume like a changed option, as "data", unless --allow-change data).
DATA_CONTENT = "data_content"
DIST_TIMEOUT = 1800.0  # seconds a process waits for the others (a collective) before the run stops with an error
# The errors for a missing required option.
NO_DATA = "no training data: pass --data DIR (one or more folders of videos or frame folders)"
NO_MODEL = "no model: pass --model PRIOR_OR_VIDEO_MODEL (directory or Hugging Face id)"
NO_OUT = "no run directory: pass --out RUN"


def _names(text: str) -> list[str]:
    """``lr,w-reg`` -> ``["lr", "w_reg"]`` (option names as flags or as in config.json)."""
    return [name.strip().replace("-", "_") for name in text.split(",") if name.strip()]


@dataclass
class TrainConfig:
    """Options of ``bufferanytime train``, one field each, in the order of ``--help`` (see the module docstring).

    ``runtime`` options say how a run is executed or reported: they may change when it is resumed without
    changing what it computes. Options not ``recorded`` say nothing about the run itself.
    """

    kind: str = option(DEPTH.name, "which video model to train", choices=KINDS, positional=True)
    data: list[str] = option([], "folders searched recursively for videos, frame folders and `bufferanytime synth` "
                             "sequences (ground-truth files are ignored); may be repeated", metavar="DIR",
                             required=NO_DATA)
    model: str | None = option(None, "image prior (Depth Anything V2 / Marigold-E2E-FT directory or Hugging Face id) "
                               "or a saved video model to continue from", required=NO_MODEL)
    out: str | None = option(None, "run directory (config, log, checkpoints, final model)", metavar="RUN",
                             required=NO_OUT, runtime=True, recorded=False)
    resume: bool = option(False, "continue the run in --out from its newest valid checkpoint (options default to its "
                          "config; a changed option is refused unless it is a run-time one or named in "
                          "--allow-change)", runtime=True, recorded=False)
    allow_change: list[str] = option([], "with --resume: options that may differ from the run's config (e.g. "
                                     "lr,w-reg), world-size for another number of processes, or data when the "
                                     "videos under --data changed; the change is applied and recorded in "
                                     "RUN/config.json's history. Always allowed: {runtime}",
                                     metavar="NAME[,NAME...]", split=_names, runtime=True, recorded=False)
    steps: int = option(TRAIN_STEPS, "total optimizer steps of the run", at_least(1), runtime=True)
    clip_len: int | None = option(None, "frames per clip (default {default}); shorter videos give shorter clips",
                                  at_least(2, " (the stabilization loss needs frame pairs)"), per_kind=True)
    causal: bool = option(False, "train causal temporal blocks for streaming: in each attention layer a frame sees "
                          "only itself and the frames before it within --horizon (stacked layers reach further back, "
                          "never forward); a bidirectional --model is turned causal with its weights kept")
    horizon: int | None = option(None, "with --causal: frames a causal layer sees, itself included (default: the "
                                 "clip length)", at_least(1), metavar="H")
    stride: int = option(1, "use every N-th frame of a video", at_least(1))
    clips_per_video: int = option(1, "fixed clips (start frame and crop) drawn per video; epochs revisit them",
                                  at_least(1))
    res: tuple[int, int] | None = option(None, "training resolution after random crop and resize",
                                         Check(lambda res: min(res) >= 8, "sides must be >= 8 pixels"),
                                         metavar="N|HxW", per_kind=True)
    min_crop: float = option(TRAIN_MIN_CROP, "smallest random crop, as a fraction of the largest crop of the target "
                             "aspect", between(0, 1, "(]"))
    batch_size: int = option(TRAIN_BATCH_PER_PROCESS, "clips per process and step", at_least(1))
    lr: float | None = option(None, "AdamW learning rate", above(0), per_kind=True)
    weight_decay: float = option(ADAMW_WEIGHT_DECAY, "AdamW weight decay", at_least(0))
    warmup: int = option(WARMUP_STEPS, "linear learning-rate warm-up steps from 0, constant after", at_least(0))
    ema: float = option(EMA_DECAY, "decay of the weights' moving average saved as RUN/model (default {default}; "
                        "0 = off)", between(0, 1, "[)", " (0 disables the average)"))
    w_reg: float = option(W_REG, "weight of the regularization loss", at_least(0))
    max_grad_norm: float | None = option(None, "clip the gradient norm (default: no clipping)", above(0))
    flow: str = option("dis", "optical flow for the stabilization loss", choices=FLOW_METHODS)
    flow_weights: str | None = option(None, "raft-small checkpoint (raft-small.pth)", metavar="PATH")
    tau: float = option(CYCLE_TAU, "cycle-consistency threshold in pixels", above(0))
    edge_mask: bool = option(True, "do not mask the stabilization loss near Canny edges of the prediction")
    stable_norm: str = option("clip", "depth: stabilization loss on the disparity normalised by one median / mean "
                              "absolute deviation per clip ({default}, default; scale-free like the regularization "
                              "loss) or on the raw disparity, as Alg. 2 writes it (none)", choices=STABLE_NORMS)
    stabilization: str = option("flow", "stabilization loss: flow (Alg. 2: a point keeps its value along the flow) "
                                "or 3d (a point keeps its 3D position given the camera's motion: depth moved by the "
                                "relative pose, normals turned by it, moving objects left out; needs each video's "
                                "camera: see --camera-poses)", choices=("flow", "3d"))
    camera_poses: str = option("auto", "with --stabilization 3d, the camera of each video: auto (default: the exact "
                               "poses of 'bufferanytime synth' data where a video has them, else estimated from the "
                               "video and the starting model's depth, as 'depth --save poses' does, once before "
                               "training) or "
                               "estimated (estimated for every video)", choices=("auto", "estimated"))
    intrinsics: str | None = option(None, "with --stabilization 3d: the intrinsics of the videos whose camera is "
                                    "estimated, when you know them, as 'depth --intrinsics' takes them: fx,fy,cx,cy "
                                    "in pixels of the videos (OpenCV pixel centres), fx,fy,cx,cy,W,H, or a file "
                                    "(KITTI calibration, COLMAP cameras.txt, synthetic meta.json, ...)",
                                    metavar="VALUES|FILE")
    fov: float | None = option(None, "with --stabilization 3d: the horizontal field of view in degrees (square pixels, "
                               "centred principal point) of the videos whose camera is estimated, when you know it "
                               "(default, without --intrinsics: estimated from each video that turns enough, else "
                               "60)", between(0, 180, "()"), metavar="DEG")
    deferred_chunk: int = option(DEFERRED_CHUNK, "normals: frames decoded at once in deferred back-propagation",
                                 at_least(1))
    seed: int = option(0, "seed of clips, crops and initial weights", at_least(0))
    cache: str | None = option(None, "keep flows, prior targets and frozen features per clip in DIR (reused from "
                               "epoch 2 on)", metavar="DIR", runtime=True)
    cache_dtype: str = option("float32", "storage type of cached features and targets (default {default}; flows "
                              "stay float32)", choices=tuple(CACHE_DTYPES))
    save_every: int = option(1000, "checkpoint every N steps", at_least(1), runtime=True)
    keep_checkpoints: int = option(2, "newest checkpoints kept", at_least(1), runtime=True)
    workers: int = option(2, "data loading processes", at_least(0), runtime=True)
    mixed_precision: str = option("auto", "{default} (default): bf16/fp16 on GPU, or as set by `accelerate launch`; "
                                  "full precision on CPU", choices=MIXED_PRECISION)
    cpu: bool = option(False, "train on the CPU even if a GPU is present", runtime=True)
    dist_timeout: float = option(DIST_TIMEOUT, "with several processes: stop with an error when one waits this long "
                                 "for the others, e.g. behind a frozen process", above(0, " seconds"),
                                 metavar="SECONDS", runtime=True)
    max_skipped_steps: int = option(10, "stop after N steps in a row with no decodable clip", at_least(1), runtime=True)
    tensorboard: bool = option(False, "also log to RUN/tensorboard/", runtime=True)
    copy_prior: bool = option(False, "copy the prior into RUN/model so that it is self-contained")
    quiet: bool = option(False, "no progress bar", short="-q", runtime=True)

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
            clean[name] = coerce(TrainConfig, name, value, source)
        return replace(self, **clean)

    def resolved(self) -> TrainConfig:
        """Fill kind-dependent defaults and check every value; raises InputError on bad values."""
        if self.kind not in KINDS:
            raise InputError(f"unknown kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        defaults = self.objective_class().defaults
        filled = {name: value for name, value in defaults.items() if getattr(self, name) is None}
        cfg = replace(self, **filled)
        cfg.res = tuple(cfg.res)
        if cfg.causal and cfg.horizon is None:
            cfg.horizon = cfg.clip_len
        cfg.validate()
        return cfg

    def objective_class(self) -> type:
        """The training objective of the run's model: its family's when ``model`` is a local checkpoint (a Marigold
        depth prior trains as a latent model, with a latent model's defaults), else that of the kind's first family."""
        from bufferanytime.families import family_of
        from bufferanytime.models import resolve_model_path

        try:
            location = Path(resolve_model_path(self.kind, self.model))
            return family_of(location).objective_class() if location.is_dir() else objective_class(self.kind)
        except InputError:  # no model there: the trainer says so when it loads it
            return objective_class(self.kind)

    def validate(self) -> None:
        """InputError naming the flag of the first bad value (see :func:`~.options.check_values`)."""
        check_values(self)
        if self.horizon is not None and not self.causal:
            raise InputError("--horizon applies to causal blocks only: add --causal")
        if self.flow in WEIGHTED_FLOWS and not self.flow_weights:
            raise InputError(f"--flow {self.flow} needs --flow-weights PATH")
        if (self.intrinsics is not None or self.fov is not None) and self.stabilization != "3d":
            raise InputError("--intrinsics and --fov give the camera of --stabilization 3d: add --stabilization 3d")
        unknown = sorted(set(self.allow_change) - set(self.option_names()) - {WORLD_SIZE})
        if unknown:
            raise InputError(f"--allow-change: unknown option(s) {', '.join(unknown)}")

    @property
    def used_flow_weights(self) -> str | None:
        """``flow_weights`` when the flow method reads them, else None."""
        return self.flow_weights if self.flow in WEIGHTED_FLOWS else None

    # -- persistence --------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        out = asdict(self)
        out["res"] = list(self.res) if self.res is not None else None
        return out

    def changes_from(self, other: TrainConfig) -> dict[str, list]:
        """``{name: [other's value, this value]}`` for every recorded option that differs (run-time ones too)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: [theirs[k], mine[k]] for k in mine if k in RECORDED_OPTIONS and mine[k] != theirs[k]}

    def refused_changes(self, changes: dict[str, list]) -> dict[str, list]:
        """The ``changes`` a resumed run may not make: neither run-time options nor named in ``allow_change``."""
        allowed = RUNTIME_OPTIONS | set(self.allow_change)
        return {k: v for k, v in changes.items() if k not in allowed}


RUNTIME_OPTIONS = frozenset(f.name for f in fields(TrainConfig) if info(f).runtime)
RECORDED_OPTIONS = frozenset(f.name for f in fields(TrainConfig) if info(f).recorded)


def format_changes(changes: dict[str, list]) -> str:
    """``lr: 0.001 -> 0.002, world_size: 1 -> 2``."""
    return ", ".join(f"{name}: {old} -> {new}" for name, (old, new) in changes.items())


def read_run_config(path: str | Path) -> tuple[dict, list]:
    """The options and the history (see ``HISTORY``) saved in a run's ``config.json``; InputError when unreadable."""
    options, history, _ = read_run_record(path)
    return options, history


def read_run_record(path: str | Path) -> tuple[dict, list, dict | None]:
    """The options, history and data content (see ``DATA_CONTENT``) saved in a run's ``config.json``."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable run config ({type(exc).__name__})") from exc
    if not isinstance(saved, dict):
        raise InputError(f"{path}: unreadable run config (not a mapping)")
    history = saved.pop(HISTORY, [])
    data = saved.pop(DATA_CONTENT, None)
    return saved, history if isinstance(history, list) else [], data if isinstance(data, dict) else None


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
