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
or infinity) stops the run with an error at once, before anything of that step is saved. ``--resume`` continues
from the newest checkpoint whose checksums match, refuses changed options unless allowed, and records the allowed
ones in ``config.json``'s ``history``. With several processes, one that waits longer than ``--dist-timeout`` for
the others stops the run with an error.

Outputs in ``RUN/``: ``config.json`` (all options), ``log.jsonl`` (one JSON object per step: ``step``,
``loss_reg``, ``loss_stable``, ``loss``, ``lr``, ``time`` = training seconds so far, ``step_time``,
``cache_hits``, ``clips`` = the clip slots of the step's samples, ``skipped_clips``, ``step_skipped``;
losses are null in a skipped step), ``checkpoints/step-N/``, ``model/`` (EMA
weights, loadable by ``bufferanytime depth|normal --model RUN/model``), ``summary.json`` (final step, time, cache
use, a hash of every process's final weights), and ``tensorboard/`` with ``--tensorboard``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_constant_schedule_with_warmup
from tqdm import tqdm

from bufferanytime.errors import InputError
from bufferanytime.flow import get_flow_model
from bufferanytime.io.atomic import atomic_path, write_text_atomic
from bufferanytime.models import load_model
from bufferanytime.models.temporal import make_causal
from bufferanytime.training import checkpoint as ckpt
from bufferanytime.training.cache import ClipCache
from bufferanytime.training.config import (
    HISTORY,
    RUN_CONFIG,
    WORLD_SIZE,
    TrainConfig,
    format_changes,
    read_run_config,
)
from bufferanytime.training.data import ClipDataset, ClipSampler, SampleIndices, collate, discover_videos
from bufferanytime.training.ema import EMA
from bufferanytime.training.hashing import file_sha256, tree_sha256
from bufferanytime.training.objectives import Objective, clip_length, objective_class, truncate

LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"
MODEL_DIR = "model"
TENSORBOARD_PROJECT = "tensorboard"


def train(config: TrainConfig) -> Path:
    """Run (or continue, with ``config.resume``) a training run; returns the final model directory."""
    config = config.resolved()
    trainer = Trainer(config)
    try:
        return trainer.run()
    except RuntimeError as exc:  # what a collective raises when another process did not answer in time
        if trainer.world_size > 1 and "timed out" in str(exc).lower():
            raise InputError(f"process {trainer.rank} waited more than --dist-timeout {config.dist_timeout:g} s for "
                             f"the other processes (one froze or died); training stopped") from exc
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
    """``RUN/log.jsonl``, one line per step; on resume, lines after the checkpoint's step are dropped."""

    def __init__(self, path: Path, keep_until: int):
        self.path = path
        kept = []
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if entry.get("step", 0) <= keep_until:
                    kept.append(line)
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
        self.file = path.open("a")

    def write(self, entry: dict) -> None:
        self.file.write(json.dumps(entry) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


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
    """Where the run is: its step, training seconds, and this session's counts."""

    step: int = 0
    elapsed: float = 0.0
    cache_hits: int = 0
    samples: int = 0
    skipped_in_a_row: int = 0


class Trainer:
    """One process's part of a training run (see the module docstring); ``run()`` does it all."""

    def __init__(self, config: TrainConfig):
        from accelerate import Accelerator, DistributedDataParallelKwargs, InitProcessGroupKwargs

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
                return checkpoint
            if self.main:
                _warn(f"{checkpoint.path} is damaged ({problem}); trying an older checkpoint")
        if self.main:
            _warn(f"{self.run_dir}: no {'valid ' if existing else ''}checkpoint to resume from; starting from step 0")
        return None

    def _resumed_history(self, checkpoint: ckpt.Checkpoint | None) -> list:
        """The run's history, with this session's changes appended; InputError on changes not allowed."""
        saved = self.run_dir / RUN_CONFIG
        if checkpoint is None or not saved.is_file():
            return []
        options, history = read_run_config(saved)
        previous = TrainConfig().updated(options, str(saved)).resolved()
        changes = self.config.changes_from(previous)
        processes = checkpoint.state.get(WORLD_SIZE, self.world_size)
        if processes != self.world_size:
            changes[WORLD_SIZE] = [processes, self.world_size]
        refused = self.config.refused_changes(changes)
        if refused:
            names = ",".join(name.replace("_", "-") for name in refused)
            raise InputError(f"{self.run_dir}: --resume with changed options ({format_changes(refused)}); pass "
                             f"--allow-change {names} to apply them, or train into another --out")
        if changes:
            self.accelerator.print(f"resuming with changed options: {format_changes(changes)}")
            history = [*history, {"step": checkpoint.step, "changed": changes}]
        return history

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
        objective = objective_class(config.kind).build(model, flow_model, config, self.device)
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

    def _start_run_dir(self, history: list) -> None:
        """Main process, once the inputs are known to be good: checkpoint folder, stale temporaries, config.json."""
        (self.run_dir / ckpt.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        for stale in (self.run_dir / ckpt.CHECKPOINTS).glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        saved = {**self.config.to_dict(), "resume": False, "allow_change": [], HISTORY: history}
        write_text_atomic(self.run_dir / RUN_CONFIG, json.dumps(saved, indent=2) + "\n")

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
        config, acc = self.config, self.accelerator
        resume_from = self._checkpoint_to_resume()
        history = self._resumed_history(resume_from)
        videos = discover_videos(config.data, progress=self.main and not config.quiet, by_content=bool(config.cache))
        parts = self._build()
        if self.main:
            self._start_run_dir(history)
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
        self._loop(parts, loader, sampler, progress)
        model_dir = self._finish(parts, progress)
        if config.tensorboard:
            acc.end_training()
        return model_dir

    def _loop(self, parts: RunParts, loader, sampler: ClipSampler, progress: Progress) -> None:
        """The step loop: train (or skip) each step's samples, log it, checkpoint every ``save_every`` steps."""
        config = self.config
        log = StepLog(self.run_dir / LOG_NAME, progress.step) if self.main else None
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

        Stops the run (InputError, on every process) when the loss, a gradient or an updated weight is not finite.
        """
        acc, params = self.accelerator, parts.params
        seed_step(self.config.seed, step, self.rank)
        clips, reg_frames, hits = self._prepare(items, parts.objective, parts.cache)
        with acc.autocast():
            losses = parts.objective.losses(parts.net, clips, reg_frames)
        acc.backward(losses.loss)
        # With a loss scaler (fp16) an infinite gradient is expected now and then: the scaler skips that step.
        grads = [p.grad for p in params.values()] if acc.scaler is None else []
        self._stop_unless_finite(step, [losses.loss.detach(), *grads], "the loss or its gradient is")
        if self.config.max_grad_norm is not None:
            acc.clip_grad_norm_(list(params.values()), self.config.max_grad_norm)
        parts.optimizer.step()
        if not acc.optimizer_step_was_skipped:
            parts.scheduler.step()
        parts.optimizer.zero_grad(set_to_none=True)
        self._stop_unless_finite(step, list(params.values()), "the weights after the update are")
        parts.ema.update(params)
        values = torch.stack([losses.loss.detach(), losses.reg, losses.stable]).float()
        values = acc.reduce(values, reduction="mean").tolist()
        return values, self._sum_over_processes([hits])[0]

    def _sum_over_processes(self, counts: list[int]) -> list[int]:
        total = self.accelerator.reduce(torch.tensor(counts, device=self.device), reduction="sum")
        return [int(v) for v in total.tolist()]

    def _stop_unless_finite(self, step: int, tensors: list, what: str) -> None:
        """InputError on every process when any process holds a NaN or infinity in ``tensors``."""
        if not self._sum_over_processes([int(not ckpt.all_finite(tensors))])[0]:
            return
        latest = ckpt.latest_checkpoint(self.run_dir)
        kept = f"the last checkpoint, {latest.path}, is intact" if latest else "no checkpoint was written"
        raise InputError(f"step {step + 1}: {what} not finite (NaN or infinity); training stopped and {kept}. "
                         "Lower --lr or set --max-grad-norm (with --resume, add --allow-change lr,max-grad-norm)")

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
            reg_frames.append(reg)
        return clips, reg_frames, hits

    # -- saving ------------------------------------------------------------------------------------------------
    def _save_checkpoint(self, parts: RunParts, progress: Progress) -> None:
        """Every process's random states, then (main) the weights and optimizer, published when complete."""
        acc, step = self.accelerator, progress.step
        tmp = ckpt.temporary_dir(self.run_dir, step)
        if self.main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        ckpt.write_rank_state(tmp, self.rank)
        if self.main:
            state = {"step": step, "elapsed": progress.elapsed, WORLD_SIZE: self.world_size, "seed": self.config.seed}
            ckpt.write_main_state(tmp, parts.model.trainable_state_dict(), parts.ema.state_dict(),
                                  parts.optimizer.state_dict(), parts.scheduler.state_dict(), state)
        acc.wait_for_everyone()
        if self.main:
            ckpt.write_checksums(tmp)  # last: covers every process's files
            ckpt.publish(self.run_dir, step, self.config.keep_checkpoints)
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
            write_text_atomic(self.run_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
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
            parts.model.save_pretrained(tmp, copy_prior=self.config.copy_prior)
        with torch.no_grad():
            for name, p in parts.params.items():
                p.copy_(current[name])
        return ema_digest
