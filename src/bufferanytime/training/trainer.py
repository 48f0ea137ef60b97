"""The training loop: upgrade an image prior to a video model with no video ground truth (Sec. 3.1, 7).

Built on Hugging Face Accelerate: the same code runs in one process or under ``accelerate launch
--num_processes N`` (distributed data parallel; every process trains on its own clips, gradients are averaged),
with mixed precision on GPUs. Per step: AdamW on the trainable weights, a linear learning-rate warm-up followed
by a constant rate (so the first N steps of a run do not depend on its total length), and an exponential moving
average of the weights.

Determinism: the clips of a step are a function of ``(seed, step)`` (:mod:`~bufferanytime.training.data`) and
the random generators are re-seeded from ``(seed, step, rank)`` before every step, so a run continued with
``--resume`` from a checkpoint ends with the same weights as an uninterrupted one (on CPU; GPU kernels may not be
bitwise deterministic).

Faults: a clip that cannot be decoded is skipped with a warning (``skipped_clips`` in the log); a step in which
some process has no decodable clip is skipped by all (no update, ``step_skipped`` in the log), and
``--max-skipped-steps`` skipped steps in a row stop the run. A loss, gradient or weight that is not finite (NaN
or infinity), an optimizer moment that overflows, or a loss beyond ``LOSS_LIMIT`` stops the run with an error at
once, before anything of that step is saved. ``--resume`` continues from the newest checkpoint whose checksums
match, refuses changed options (and changed data under ``--data``) unless allowed, measured against the options
the checkpoint was trained with, and records the allowed ones in ``config.json``'s ``history``. With several
processes, one that waits longer than ``--dist-timeout`` for the others stops the run with an error. One run at a
time: a second one started into the same ``RUN`` is refused (a lock on ``RUN/.lock``).

Outputs in ``RUN/``: ``config.json`` (all options), ``log.jsonl`` (one JSON object per step: ``step``,
``loss_reg``, ``loss_stable``, ``loss``, ``lr``, ``time`` = training seconds so far, ``step_time``,
``cache_hits``, ``clips`` = the clip slots of the step's samples, ``skipped_clips``, ``step_skipped``;
losses are null in a skipped step), ``.lock`` (held while a run writes), ``checkpoints/step-N/``, ``model/`` (EMA
weights, loadable by ``bufferanytime depth|normal --model RUN/model``), ``summary.json`` (final step, time, cache
use, a hash of every process's final weights), and ``tensorboard/`` with ``--tensorboard``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers.optimization import get_constant_schedule_with_warmup

from bufferanytime.errors import InputError
from bufferanytime.flow import get_flow_model
from bufferanytime.io.atomic import atomic_path, write_text_atomic
from bufferanytime.models import load_model
from bufferanytime.models.temporal import make_causal
from bufferanytime.tasks import get_task
from bufferanytime.training import checkpoint as ckpt
from bufferanytime.training.cache import ClipCache, cache_directory
from bufferanytime.training.cameras import check_estimable, estimate_cameras, read_cameras, video_cameras
from bufferanytime.training.config import (
    DATA_CONTENT,
    HISTORY,
    RUN_CONFIG,
    WORLD_SIZE,
    TrainConfig,
    format_changes,
    read_run_record,
)
from bufferanytime.training.data import (
    ClipDataset,
    ClipSampler,
    SampleIndices,
    VideoInfo,
    collate,
    discover_videos,
)
from bufferanytime.training.distributed import lost_process_error, watch_launcher
from bufferanytime.training.ema import EMA
from bufferanytime.training.hashing import file_sha256, tree_sha256
from bufferanytime.training.objectives import Objective, clip_length, objective_class, truncate

LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
MODEL_DIR = "model"
TENSORBOARD_PROJECT = "tensorboard"
LOCK_NAME = ".lock"  # RUN/.lock: held (flock) by the main process of the run writing into RUN
# A loss beyond this is far past any the objectives give (of order 1, times --w-reg), and the squares of its
# gradients, which AdamW keeps in float32 (largest 3.4e38), are then close to overflowing: the run stops first.
LOSS_LIMIT = 1e15
# Temporaries of RUN's files (io.atomic: .NAME.tmp-PID, .NAME.old-PID) that a killed run leaves behind.
STALE_TEMPORARY = re.compile(r"^\.(model|log\.jsonl|config\.json|summary\.json)\.(tmp|old)-(\d+)$")


def train(config: TrainConfig) -> Path:
    """Run (or continue, with ``config.resume``) a training run; returns the final model directory."""
    config = config.resolved()
    if config.cache:
        cache_directory(config.cache)  # a bad --cache is refused before anything is written
    watch_launcher()  # a worker of `accelerate launch` ends with its launcher
    trainer = Trainer(config)
    try:
        return trainer.run()
    except RuntimeError as exc:  # what a collective raises when another process did not answer in time
        if trainer.world_size > 1 and "timed out" in str(exc).lower():
            raise InputError(f"process {trainer.rank} waited more than --dist-timeout {config.dist_timeout:g} s for "
                             f"the other processes (one froze or died); training stopped") from exc
        lost = lost_process_error(exc, trainer.rank, trainer.world_size)
        if lost is not None:
            raise lost from exc
        raise


def _warn(message: str) -> None:
    """A one-line warning on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def apply_hyperparameters(optimizer, scheduler, lr: float, weight_decay: float) -> None:
    """Make the run's lr and weight decay those in use after loading a checkpoint (whose state holds the old ones).

    The scheduler's ``base_lrs`` (what it multiplies by the schedule) and the optimizer's current rate both change.
    """
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
        group["weight_decay"] = weight_decay


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed Python, NumPy and PyTorch from ``(seed, step, rank)``: a step's randomness ignores the past."""
    value = int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def weights_digest(parameters: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names and float32 bytes), to compare weights across processes and runs."""
    digest = hashlib.sha256()
    for name in sorted(parameters):
        digest.update(name.encode())
        digest.update(parameters[name].detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_content(videos: list[VideoInfo]) -> dict:
    """``{"videos": N, "sha256": digest}`` of the training videos: their paths, sizes in frames and pixels, content
    signatures (with --cache) and every file's name, size and modification time (a stat, no read): a video added,
    removed, re-encoded or replaced changes it."""
    digest = hashlib.sha256()
    for video in videos:
        digest.update(f"{video.path}\0{video.kind}\0{video.num_frames}\0{video.height}x{video.width}\0"
                      f"{video.signature}\n".encode())
        path = Path(video.path)
        files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            digest.update(f"{file.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return {"videos": len(videos), "sha256": digest.hexdigest()}


def _shown_data(content: dict) -> str:
    """``3 videos (sha256 1a2b3c4d5e6f)``."""
    return f"{content.get('videos')} videos (sha256 {str(content.get('sha256'))[:12]})"


def _ranges(steps: list[int]) -> str:
    """``[3, 4, 5, 8]`` -> ``3-5, 8``."""
    parts: list[str] = []
    for step in steps:
        if parts and int(parts[-1].split("-")[-1]) == step - 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{step}"
        else:
            parts.append(str(step))
    return ", ".join(parts)


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _mixed_precision(config: TrainConfig) -> str | None:
    """``auto``: what ``accelerate launch`` was told, else bf16 (or fp16) on a GPU and full precision on CPU."""
    if config.mixed_precision != "auto":
        return config.mixed_precision
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        return None
    if config.cpu or not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class StepLog:
    """``RUN/log.jsonl``, one line per step; on resume, lines after the checkpoint's step are dropped, and lines
    up to it that are missing (a log cut short or damaged) are restored from the checkpoint's copy, ``record``."""

    def __init__(self, path: Path, keep_until: int, record: Path | None = None):
        self.path = path
        kept = _log_lines(path, keep_until)
        missing = sorted(set(range(1, keep_until + 1)) - set(kept))
        if missing:
            copy = _log_lines(record, keep_until) if record is not None else {}
            if set(copy) >= set(range(1, keep_until + 1)):
                kept = copy
                _warn(f"{path} lacked steps {_ranges(missing)}; restored from {record}")
            else:
                _warn(f"{path} lacks steps {_ranges(missing)} (cut short or damaged) and the checkpoint holds no "
                      "copy of them: their record is lost")
        text = "".join(f"{kept[step]}\n" for step in sorted(kept))
        ckpt.saving(path, lambda target: write_text_atomic(target, text))
        self.file = path.open("a")

    def write(self, entry: dict) -> None:
        ckpt.saving(self.path, lambda _: self._append(json.dumps(entry) + "\n"))

    def _append(self, line: str) -> None:
        self.file.write(line)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _log_lines(path: Path, keep_until: int) -> dict[int, str]:
    """The lines of a log of steps, by step, up to ``keep_until`` (lines that do not parse are left out)."""
    kept: dict[int, str] = {}
    if not path.is_file():
        return kept
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        step = entry.get("step") if isinstance(entry, dict) else None
        if isinstance(step, int) and 0 < step <= keep_until:
            kept[step] = line
    return kept


@dataclass
class RunParts:
    """The live objects of a run, built once by :meth:`Trainer._build`."""

    model: torch.nn.Module  # the video model being trained
    objective: Objective
    params: dict[str, torch.nn.Parameter]  # its trainable weights, by name
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA
    net: torch.nn.Module | None = None  # objective.net as prepared by Accelerate (wrapped for data parallelism)
    cache: ClipCache | None = None


@dataclass
class Progress:
    """Where the run is: its step, training seconds, and the counts since this invocation started."""

    step: int = 0
    elapsed: float = 0.0
    cache_hits: int = 0
    samples: int = 0
    skipped_in_a_row: int = 0


class Trainer:
    """One process's part of a training run (see the module docstring); ``run()`` does it all."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs

        fp16_on_cpu = config.mixed_precision == "fp16" and (config.cpu or not torch.cuda.is_available())
        if fp16_on_cpu:  # Accelerate turns native fp16 off on the CPU: the run is fp32, and recorded as such
            config = replace(config, mixed_precision="no")
        self.config = config
        self.run_dir = Path(config.out)
        kwargs = {}
        if config.tensorboard:
            kwargs = {"log_with": "tensorboard", "project_dir": str(self.run_dir)}
        # The DPT neck has parameters that a given forward does not use (the first fusion layer's residual unit).
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        group = InitProcessGroupKwargs(timeout=timedelta(seconds=config.dist_timeout))
        self.accelerator = Accelerator(
            cpu=config.cpu, mixed_precision=_mixed_precision(config), kwargs_handlers=[ddp, group], **kwargs
        )
        self.device = self.accelerator.device
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.main = self.accelerator.is_main_process
        self._warned: set[str] = set()  # videos already reported unreadable
        self._lock = None  # the open RUN/.lock of the main process, held while the run writes into RUN
        self._created_run_dir = False
        self._resumed = False  # whether the weights came from a checkpoint (else they are --model's until step 1)
        if fp16_on_cpu and self.main:
            _warn("--mixed-precision fp16 has no effect on the CPU; training in full precision (fp32), recorded as "
                  "mixed_precision 'no'")

    # -- setup -------------------------------------------------------------------------------------------------
    def _checkpoint_to_resume(self) -> ckpt.Checkpoint | None:
        """The newest checkpoint whose files match their checksums (damaged ones are reported and passed over)."""
        existing = ckpt.list_checkpoints(self.run_dir)
        if not self.config.resume:
            if existing or (self.run_dir / MODEL_DIR).exists():
                raise InputError(
                    f"{self.run_dir} already holds a training run; pass --resume to continue it, or another --out"
                )
            return None
        for checkpoint in reversed(existing):
            problem = ckpt.damage(checkpoint)
            if problem is None:
                if ckpt.unverified(checkpoint) and self.main:
                    _warn(f"{checkpoint.path} has no {ckpt.CHECKSUMS_NAME} (written by an earlier version, before "
                          "checksums): its files read, but cannot be verified")
                return checkpoint
            if self.main:
                _warn(f"{checkpoint.path} is damaged ({problem}); trying an older checkpoint")
        if self.main:
            _warn(f"{self.run_dir}: no {'valid ' if existing else ''}checkpoint to resume from; starting from step 0")
        return None

    def _recorded_run(self, checkpoint: ckpt.Checkpoint | None) -> tuple[dict, list, dict | None, str] | None:
        """The options, history and data content the run was trained with, and where they were read.

        From the checkpoint resumed from (what its weights were trained with); else from ``RUN/config.json``;
        else (no valid checkpoint and no config) from the newest checkpoint whose ``state.json`` records them.
        None for a run that records nothing (nothing to compare with).
        """
        if checkpoint is not None and isinstance(checkpoint.state.get("options"), dict):
            state = checkpoint.state
            history = state.get(HISTORY) if isinstance(state.get(HISTORY), list) else []
            return state["options"], history, state.get(DATA_CONTENT), str(checkpoint.path / ckpt.STATE_NAME)
        saved = self.run_dir / RUN_CONFIG
        if saved.is_file():
            return (*read_run_record(saved), str(saved))
        for other in reversed(ckpt.list_checkpoints(self.run_dir)):
            if isinstance(other.state.get("options"), dict):
                history = other.state.get(HISTORY) if isinstance(other.state.get(HISTORY), list) else []
                return other.state["options"], history, other.state.get(DATA_CONTENT), str(other.path)
        return None

    def _resumed_history(self, checkpoint: ckpt.Checkpoint | None, data: dict) -> list:
        """The run's history, with the changes of this invocation appended; InputError on changes not allowed.

        Entries after the step resumed from are dropped (their weights are not kept). Changes that the run's
        config.json records at exactly that step were allowed by the session that started there.
        """
        if not self.config.resume:
            return []
        recorded = self._recorded_run(checkpoint)
        if recorded is None:
            return []
        options, history, old_data, source = recorded
        step = checkpoint.step if checkpoint is not None else 0
        previous = TrainConfig().updated(options, source).resolved()
        changes = self.config.changes_from(previous)
        if checkpoint is not None:
            processes = checkpoint.state.get(WORLD_SIZE, self.world_size)
            if processes != self.world_size:
                changes[WORLD_SIZE] = [processes, self.world_size]
        if isinstance(old_data, dict) and old_data.get("sha256") != data["sha256"] and "data" not in changes:
            changes["data"] = [_shown_data(old_data), _shown_data(data)]
        refused = {k: v for k, v in self.config.refused_changes(changes).items() if k not in self._allowed_at(step)}
        if refused:
            names = ",".join(name.replace("_", "-") for name in refused)
            raise InputError(f"{self.run_dir}: --resume with changed options ({format_changes(refused)}); pass "
                             f"--allow-change {names} to apply them, or train into another --out")
        history = [entry for entry in history if isinstance(entry, dict) and entry.get("step", 0) <= step]
        if changes:
            self.accelerator.print(f"resuming with changed options: {format_changes(changes)}")
            history = [*history, {"step": step, "changed": changes}]
        return history

    def _allowed_at(self, step: int) -> set[str]:
        """Options that RUN/config.json's history records as changed at ``step`` (by a session that resumed there
        and stopped before its next checkpoint): already allowed."""
        saved = self.run_dir / RUN_CONFIG
        if step == 0 or not saved.is_file():
            return set()
        try:
            _, history, _ = read_run_record(saved)
        except InputError:
            return set()
        allowed: set[str] = set()
        for entry in history:
            if isinstance(entry, dict) and entry.get("step") == step and isinstance(entry.get("changed"), dict):
                allowed |= set(entry["changed"])
        return allowed

    def _build(self) -> RunParts:
        """The model (the same initial weights in every process and run), its objective and optimizer."""
        config = self.config
        torch.manual_seed(config.seed)
        model = load_model(config.kind, config.model)
        model.clip_len = config.clip_len
        self._causal(model)
        model.train()
        flow_kwargs = {"weights": config.used_flow_weights, "device": self.device} if config.used_flow_weights else {}
        flow_model = get_flow_model(config.flow, **flow_kwargs)
        objective = objective_class(model).build(model, flow_model, config, self.device)
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(params.values(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = get_constant_schedule_with_warmup(optimizer, config.warmup)
        return RunParts(model, objective, params, optimizer, scheduler, EMA(params, config.ema))

    def _causal(self, model) -> None:
        """With --causal, turn the loaded model's temporal blocks causal (every weight kept: a causal block has the
        shapes of a bidirectional one, only its positions and mask differ) and say so."""
        config, was = self.config, model.temporal_config
        if not config.causal:
            if was.causal:
                self.accelerator.print(f"--model is causal (horizon {was.horizon}): training it causally")
            return
        make_causal(model, config.horizon)
        origin = f"causal with horizon {was.horizon}" if was.causal else "bidirectional (or a prior)"
        self.accelerator.print(f"causal temporal blocks, horizon {config.horizon}: initialised from --model's "
                               f"temporal weights ({origin}; all shapes match)")

    def _check_out(self) -> None:
        """InputError when --out is a file, or lies under one (before anything is read or written)."""
        run = self.run_dir
        if run.exists() and not run.is_dir():
            raise InputError(f"--out {run}: a file is there, not a run folder; pass another --out")
        for parent in run.absolute().parents:
            if parent.exists():
                if not parent.is_dir():
                    raise InputError(f"--out {run}: {parent} is a file, not a folder; pass another --out")
                break

    def _take_lock(self) -> None:
        """Hold ``RUN/.lock`` (flock) while this run writes into RUN; a second run into RUN is refused, on every
        process, before it reads or writes anything else. RUN is created if needed (and removed again by
        :meth:`_release_lock` if the run stops before writing anything in it)."""
        failed = 0
        if self.main:
            self._created_run_dir = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            lock = (self.run_dir / LOCK_NAME).open("a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held by another run
                lock.close()
                failed = 1
            except OSError as exc:  # a file system without locks: nothing to check with
                _warn(f"{self.run_dir / LOCK_NAME}: cannot be locked ({os.strerror(exc.errno or 0).lower()}); "
                      "make sure no other run writes into this folder")
            if not failed:
                self._lock = lock
        if self._sum_over_processes([failed])[0]:
            raise InputError(f"{self.run_dir} is in use by another training run; wait for it to end, or pass "
                             "another --out")

    def _release_lock(self, started: bool) -> None:
        """Let go of ``RUN/.lock``; a RUN this run created and wrote nothing into is removed with it."""
        if self._lock is None:
            return
        if self._created_run_dir and not started:
            (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
            try:
                self.run_dir.rmdir()
            except OSError:  # not empty: something else was put there meanwhile
                pass
        self._lock.close()
        self._lock = None

    def _start_run_dir(self, history: list, data: dict) -> None:
        """Main process, once the inputs are known to be good: checkpoint folder, stale temporaries, config.json."""
        (self.run_dir / ckpt.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale(self.run_dir)
        for path in self.run_dir.iterdir():
            match = STALE_TEMPORARY.match(path.name)
            if match and int(match.group(3)) != os.getpid() and not _pid_alive(int(match.group(3))):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        self._record = {**self.config.to_dict(), "resume": False, "allow_change": []}
        self._history, self._data = history, data
        saved = {**self._record, HISTORY: history, DATA_CONTENT: data}
        text = json.dumps(saved, indent=2) + "\n"
        ckpt.saving(self.run_dir / RUN_CONFIG, lambda path: write_text_atomic(path, text))

    def _restore(self, parts: RunParts, checkpoint: ckpt.Checkpoint) -> tuple[Progress, dict | None]:
        """Load weights, average, optimizer and schedule from ``checkpoint``; its progress and random states."""
        state = ckpt.load_checkpoint(checkpoint, self.rank, torch.device("cpu"))
        missing, unexpected = parts.model.load_state_dict(state["trainable"], strict=False)
        if unexpected or set(missing) & set(parts.model.trainable_state_dict()):
            raise InputError(f"{checkpoint.path}: checkpoint does not match the model")
        parts.ema.load_state_dict(state["ema"])
        parts.optimizer.load_state_dict(state["optimizer"])
        parts.scheduler.load_state_dict(state["scheduler"])
        apply_hyperparameters(parts.optimizer, parts.scheduler, self.config.lr, self.config.weight_decay)
        self.accelerator.print(f"resuming {self.run_dir} from step {checkpoint.step}")
        return Progress(checkpoint.step, float(state["state"].get("elapsed", 0.0))), state["rng"]

    def _to_device(self, parts: RunParts) -> None:
        """Hand the trainable net and the optimizer to Accelerate; the average follows them to the device."""
        parts.net, parts.optimizer = self.accelerator.prepare(parts.objective.net, parts.optimizer)
        for name, value in parts.ema.shadow.items():
            parts.ema.shadow[name] = value.to(self.device)
        parts.cache = self._cache(parts.model)

    def _cache(self, model) -> ClipCache | None:
        """The clip cache, keyed by the content of the prior's and the flow's weights (hashed once per run)."""
        config = self.config
        if not config.cache:
            return None
        flow_weights = None
        if config.used_flow_weights:
            weights = Path(config.used_flow_weights)
            flow_weights = file_sha256(weights) if weights.is_file() else str(weights)
        prior = Path(model.prior_ref)
        context = {
            "kind": config.kind,
            "prior": tree_sha256(prior) if prior.is_dir() else str(model.prior_ref),
            "flow": config.flow,
            "flow_weights": flow_weights,
            "tau": config.tau,
            "precision": self.accelerator.mixed_precision,
        }
        return ClipCache(config.cache, context, config.cache_dtype)

    def _loader(self, sampler: ClipSampler, cache: ClipCache | None, start_step: int) -> torch.utils.data.DataLoader:
        """This process's samples from ``start_step`` on (see :mod:`~bufferanytime.training.data`)."""
        config = self.config
        return torch.utils.data.DataLoader(
            ClipDataset(sampler, cache.load if cache is not None else None),
            batch_size=config.batch_size,
            sampler=SampleIndices(start_step, config.steps, config.batch_size, self.rank, self.world_size),
            num_workers=config.workers,
            collate_fn=collate,
        )

    # -- the run -----------------------------------------------------------------------------------------------
    def run(self) -> Path:
        """Set up (or resume) the run, train to ``config.steps`` and write the final model."""
        self._check_out()
        self._take_lock()
        started = False
        try:
            parts, videos, resume_from = self._setup()
            started = True
            return self._train(parts, videos, resume_from)
        finally:
            self._release_lock(started)

    def _setup(self) -> tuple[RunParts, list[VideoInfo], ckpt.Checkpoint | None]:
        """Check the run (checkpoint to resume, options and data against the recorded ones), build the model and
        start the run folder."""
        config = self.config
        resume_from = self._checkpoint_to_resume()
        if resume_from is not None and resume_from.step > config.steps:
            raise InputError(f"{self.run_dir}: the run is already at step {resume_from.step}, past --steps "
                             f"{config.steps}; pass --steps {resume_from.step} or more to continue it")
        videos = discover_videos(config.data, progress=self.main and not config.quiet, by_content=bool(config.cache))
        if config.stabilization == "3d":  # a camera for every video: refused before any model work if none can be
            self._given_intrinsics = check_estimable(get_task(config.kind), videos, config.camera_poses,
                                                     config.intrinsics, config.fov)
        data = data_content(videos)
        history = self._resumed_history(resume_from, data)
        parts = self._build()
        if self.main:
            self._start_run_dir(history, data)
        if config.stabilization == "3d":
            self._cameras = self._video_cameras(videos)
        self._resumed = resume_from is not None
        return parts, videos, resume_from

    def _video_cameras(self, videos: list[VideoInfo]) -> dict:
        """Each video's camera (:mod:`bufferanytime.training.cameras`): those to estimate solved by the main
        process and recorded in the run folder, where the other processes read them."""
        config = self.config
        if self.main:
            def starting_model():
                return load_model(config.kind, config.model)
            estimate_cameras(videos, config.camera_poses, starting_model, self.device, self.run_dir, config.quiet,
                             self._given_intrinsics)
        self.accelerator.wait_for_everyone()
        return video_cameras(videos, config.camera_poses, read_cameras(self.run_dir))

    def _train(self, parts: RunParts, videos: list[VideoInfo], resume_from: ckpt.Checkpoint | None) -> Path:
        """Restore the checkpoint (if any), train to ``config.steps`` and write the final model."""
        config, acc = self.config, self.accelerator
        acc.wait_for_everyone()
        progress, rng = self._restore(parts, resume_from) if resume_from is not None else (Progress(), None)
        self._to_device(parts)
        sampler = ClipSampler(
            videos, config.clip_len, config.stride, config.res, config.min_crop, config.clips_per_video, config.seed
        )
        loader = self._loader(sampler, parts.cache, progress.step)
        if config.tensorboard:
            acc.init_trackers(TENSORBOARD_PROJECT)
        if rng is not None:
            ckpt.set_rng_state(rng)
        acc.print(f"{len(videos)} videos, {sampler.num_slots} clips of up to {config.clip_len} frames at "
                  f"{config.res[0]}x{config.res[1]}, {self.world_size} process(es) x batch {config.batch_size}")
        record = resume_from.path / ckpt.LOG_COPY if resume_from is not None else None
        self._loop(parts, loader, sampler, progress, record)
        model_dir = self._finish(parts, progress)
        if config.tensorboard:
            acc.end_training()
        return model_dir

    def _loop(self, parts: RunParts, loader, sampler: ClipSampler, progress: Progress, record: Path | None) -> None:
        """The step loop: train (or skip) each step's samples, log it, checkpoint every ``save_every`` steps."""
        config = self.config
        log = StepLog(self.run_dir / LOG_NAME, progress.step, record) if self.main else None
        bar = tqdm(total=config.steps, initial=progress.step, desc=f"train {config.kind}", unit="step",
                   disable=not self.main or config.quiet)
        for items in loader:
            entry = self._step(parts, items, sampler, progress)
            self._report(entry, log, bar)
            if progress.step % config.save_every == 0 or progress.step == config.steps:
                self._save_checkpoint(parts, progress)
        bar.close()
        if log is not None:
            log.close()

    def _step(self, parts: RunParts, items: list[dict], sampler: ClipSampler, progress: Progress) -> dict:
        """One step on this process's ``items`` (skipped by all when a process has no decodable clip); its log."""
        started = time.perf_counter()
        good = self._decodable(items)
        skipped_clips, empty = self._sum_over_processes([len(items) - len(good), int(not good)])
        lr = parts.optimizer.param_groups[0]["lr"]  # the rate this step uses
        progress.skipped_in_a_row = progress.skipped_in_a_row + 1 if empty else 0
        limit = self.config.max_skipped_steps
        if progress.skipped_in_a_row >= limit:
            raise InputError(f"step {progress.step + 1}: no decodable clip in {limit} steps in a row; "
                             "check the videos named in the warnings above")
        values, hits = [None, None, None], 0
        if not empty:
            values, hits = self._train_step(progress.step, good, parts)
        step_time = time.perf_counter() - started
        progress.step += 1
        progress.cache_hits += hits
        progress.samples += len(items) * self.world_size
        progress.elapsed += step_time
        global_batch = self.config.batch_size * self.world_size
        slots = [sampler.slot_of_sample((progress.step - 1) * global_batch + i) for i in range(global_batch)]
        return {"step": progress.step, "loss_reg": values[1], "loss_stable": values[2], "loss": values[0], "lr": lr,
                "time": round(progress.elapsed, 4), "step_time": round(step_time, 4), "cache_hits": hits,
                "clips": slots, "skipped_clips": skipped_clips, "step_skipped": bool(empty)}

    def _report(self, entry: dict, log: StepLog | None, bar: tqdm) -> None:
        """A step's entry to ``RUN/log.jsonl`` (main process), the progress bar and TensorBoard."""
        if log is not None:
            log.write(entry)
        bar.update(1)
        if not entry["step_skipped"]:
            bar.set_postfix(loss=f"{entry['loss']:.4g}", stable=f"{entry['loss_stable']:.4g}",
                            reg=f"{entry['loss_reg']:.4g}")
        if self.config.tensorboard:
            scalars = {k: v for k, v in entry.items() if k not in ("step", "clips") and v is not None}
            self.accelerator.log(scalars, step=entry["step"])

    def _train_step(self, step: int, items: list[dict], parts: RunParts) -> tuple[list[float], int]:
        """One optimizer step on ``items``; returns the mean ``[loss, loss_reg, loss_stable]`` and the cache hits.

        Stops the run (InputError, on every process) when the prior's targets, the loss, a gradient, an updated
        weight or an optimizer moment is not finite, or the loss is beyond ``LOSS_LIMIT``.
        """
        acc, params = self.accelerator, parts.params
        seed_step(self.config.seed, step, self.rank)
        clips, reg_frames, hits = self._prepare(items, parts.objective, parts.cache)
        inputs_finite = ckpt.all_finite(t for clip in clips for key, t in clip.items()  # a lost pose is NaN
                                        if isinstance(t, torch.Tensor) and key != "poses")
        self._stop_if(step, not inputs_finite, "the frozen prior's targets or the flows of this step's clips are "
                      "not finite (NaN or infinity)", self._prior_advice())
        with acc.autocast():
            losses = parts.objective.losses(parts.net, clips, reg_frames)
        acc.backward(losses.loss)
        # With a loss scaler (fp16) an infinite gradient is expected now and then: the scaler skips that step.
        grads = [p.grad for p in params.values()] if acc.scaler is None else []
        loss = float(losses.loss.detach())
        self._stop_if(step, not ckpt.all_finite([losses.loss.detach(), *grads]),
                      "the loss or its gradient is not finite (NaN or infinity)", self._advice(step, losses))
        self._stop_if(step, abs(loss) > LOSS_LIMIT, f"the loss is {loss:.3g}, beyond {LOSS_LIMIT:g} (the squares of "
                      "its gradients would overflow the optimizer's float32 moments)", self._advice(step, losses))
        if self.config.max_grad_norm is not None:
            acc.clip_grad_norm_(list(params.values()), self.config.max_grad_norm)
        parts.optimizer.step()
        if not acc.optimizer_step_was_skipped:
            parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        self._stop_if(step, not ckpt.all_finite(params.values()),
                      "the weights after the update are not finite (NaN or infinity)", self._advice(step + 1, losses))
        self._stop_if(step, not ckpt.all_finite(ckpt.nested_tensors(parts.optimizer.state_dict()["state"])),
                      "the optimizer's moments after the update are not finite (NaN or infinity)",
                      self._advice(step + 1, losses))
        parts.ema.update(params)
        values = torch.stack([losses.loss.detach(), losses.reg, losses.stable]).float()
        values = acc.reduce(values, reduction="mean").tolist()
        return values, self._sum_over_processes([hits])[0]

    def _sum_over_processes(self, counts: list[int]) -> list[int]:
        total = self.accelerator.reduce(torch.tensor(counts, device=self.device), reduction="sum")
        return [int(v) for v in total.tolist()]

    def _stop_if(self, step: int, bad: bool, what: str, advice: str) -> None:
        """InputError on every process when ``bad`` holds on any process: ``step N: <what>; ... <advice>``."""
        if not self._sum_over_processes([int(bad)])[0]:
            return
        saved = [c for c in ckpt.list_checkpoints(self.run_dir) if c.step <= step]
        kept = (f"the last checkpoint, {saved[-1].path}, was saved before it (its weights and moments were checked "
                "finite)") if saved else "no checkpoint was written"
        raise InputError(f"step {step + 1}: {what}; training stopped and {kept}. {advice}")

    def _advice(self, updates: int, losses) -> str:
        """What to change, for a loss, gradient or update out of range after ``updates`` updates of this run.

        Before any update the weights are --model's own: the learning rate cannot be the cause.
        """
        term = self.config.w_reg * float(losses.reg.detach())
        if not self._resumed and updates == 0:
            if not np.isfinite(term) or abs(term) > LOSS_LIMIT:
                return f"No update was made yet: lower --w-reg (the regularization term is {term:.3g})"
            return ("No update was made yet, so --lr is not the cause: --model's own weights give this on these "
                    "clips; check --model")
        if np.isfinite(term) and abs(term) > LOSS_LIMIT:
            return (f"Lower --lr or --w-reg (the regularization term is {term:.3g}) or set --max-grad-norm (with "
                    "--resume, add --allow-change lr,w-reg,max-grad-norm)")
        return "Lower --lr or set --max-grad-norm (with --resume, add --allow-change lr,max-grad-norm)"

    def _prior_advice(self) -> str:
        """What to change when the frozen prior's targets (or the flows) are not finite: not --lr, no update uses
        them before they are computed."""
        if self.accelerator.mixed_precision == "fp16":
            return ("--model overflows float16 on these clips, which no learning rate changes: pass "
                    "--mixed-precision bf16 or no")
        return "--model gives values beyond the floating-point range on these clips, which no learning rate changes: " \
               "check --model"

    def _decodable(self, items: list[dict]) -> list[dict]:
        """The items whose clip could be read; a warning for each unreadable video (once per session)."""
        good = []
        for item in items:
            if item["error"] is None:
                good.append(item)
            elif item["spec"].path not in self._warned:
                self._warned.add(item["spec"].path)
                _warn(f"skipping a clip that cannot be read: {item['error']}")
        return good

    def _prepare(self, items: list[dict], objective: Objective, cache: ClipCache | None):
        """Prepared clips on the device (from the cache, or computed and cached), cut to the batch's shortest."""
        lengths = [clip_length(it["cached"]) if it["cached"] is not None else it["frames"].shape[0] for it in items]
        length = min(lengths)
        clips, reg_frames, hits = [], [], 0
        for item in items:
            reg = min(int(item["reg_fraction"] * length), length - 1)
            if item["cached"] is not None:
                prepared = {k: v.to(self.device) for k, v in item["cached"].items()}
                hits += 1
            else:
                frames = item["frames"].to(self.device).float() / 255.0
                with self.accelerator.autocast():
                    prepared = objective.prepare(frames, None if cache is not None else [reg])
                if cache is not None:
                    cache.save(item["spec"], prepared)
            clips.append(truncate(prepared, length, objective.frame_tensor_keys(prepared)))
            if self.config.stabilization == "3d":
                clips[-1].update(self._camera(item["spec"], length))
            reg_frames.append(reg)
        return clips, reg_frames, hits

    def _camera(self, spec, length: int) -> dict[str, torch.Tensor]:
        """The poses of a clip's ``length`` first frames and its crop's intrinsics (``--stabilization 3d``)."""
        frames = [spec.start + i * spec.stride for i in range(length)]
        poses, intrinsics = self._cameras[spec.path].clip(frames, spec.crop, spec.res)
        return {"poses": torch.from_numpy(poses).to(self.device),
                "intrinsics": torch.from_numpy(intrinsics).to(self.device)}

    # -- saving ------------------------------------------------------------------------------------------------
    def _save_checkpoint(self, parts: RunParts, progress: Progress) -> None:
        """Every process's random states, then (main) the weights and optimizer, published when complete."""
        acc, step = self.accelerator, progress.step
        tmp = ckpt.temporary_dir(self.run_dir, step)
        try:
            if self.main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            ckpt.write_rank_state(tmp, self.rank)
            if self.main:
                state = {"step": step, "elapsed": progress.elapsed, WORLD_SIZE: self.world_size,
                         "seed": self.config.seed, "options": self._record, HISTORY: self._history,
                         DATA_CONTENT: self._data}
                ckpt.write_main_state(tmp, parts.model.trainable_state_dict(), parts.ema.state_dict(),
                                      parts.optimizer.state_dict(), parts.scheduler.state_dict(), state)
                ckpt.copy_log(tmp, self.run_dir / LOG_NAME)
            acc.wait_for_everyone()
            if self.main:
                ckpt.write_checksums(tmp)  # last: covers every process's files
                ckpt.publish(self.run_dir, step, self.config.keep_checkpoints)
        except BaseException:  # a full disk, a kill: no half-assembled checkpoint stays behind
            if self.main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        acc.wait_for_everyone()

    def _finish(self, parts: RunParts, progress: Progress) -> Path:
        """Write ``RUN/model`` (EMA weights) and ``RUN/summary.json``; check every process has the same weights."""
        acc = self.accelerator
        raw = torch.tensor(list(bytes.fromhex(weights_digest(parts.params))), dtype=torch.int64, device=self.device)
        digests = [bytes(row.tolist()).hex() for row in acc.gather(raw[None]).cpu()]
        final = self.run_dir / MODEL_DIR
        if not ckpt.all_finite(parts.ema.shadow.values()):
            raise InputError(f"the averaged weights are not all finite; {final} not written")
        if self.main:
            if len(set(digests)) > 1:
                warnings.warn(f"processes ended with different weights: {digests}", stacklevel=2)
            ema_digest = self._write_model(parts, final)
            summary = {
                "step": progress.step,
                "elapsed": round(progress.elapsed, 3),
                "world_size": self.world_size,
                "weights_sha256_per_process": digests,
                "processes_identical": len(set(digests)) == 1,
                "ema_sha256": ema_digest,
                "cache_hits_this_session": progress.cache_hits,
                "samples_this_session": progress.samples,
                "model": str(final),
            }
            text = json.dumps(summary, indent=2) + "\n"
            ckpt.saving(self.run_dir / SUMMARY_NAME, lambda path: write_text_atomic(path, text))
            acc.print(f"model written to {final}")
        acc.wait_for_everyone()
        return final

    def _write_model(self, parts: RunParts, final: Path) -> str:
        """Save the model with its averaged weights as ``final`` (replaced whole); the digest of those weights.

        The trained weights are put back afterwards: the model object is left as training left it.
        """
        current = {name: p.detach().clone() for name, p in parts.params.items()}
        parts.ema.copy_to(parts.params)
        ema_digest = weights_digest(parts.params)
        with atomic_path(final) as tmp:
            ckpt.saving(final, lambda _: parts.model.save_pretrained(tmp, copy_prior=self.config.copy_prior))
        with torch.no_grad():
            for name, p in parts.params.items():
                p.copy_(current[name])
        return ema_digest
