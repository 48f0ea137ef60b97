"""The driver of a batch run (``bufferanytime depth|normal --engine local|ray``).

1. The inputs are collected (paths, lists, globs, manifests) and each is given its output folder ``OUT/<stem>``
   (``<stem>-2``... for repeated stems, in input order: the same on either engine).
2. An input whose row in ``OUT/KIND_manifest.jsonl`` matches its content and the model and settings, with its
   files still there, is skipped; the others become jobs.
3. The engine runs the jobs (one model load per worker) and each finished row goes into the manifest.

Bad options and an engine that cannot start (Ray missing, ``--address`` unreachable, resources no node has) are
refused with one ``error:`` line before any input is run. Exit code: 0 when every input is done or skipped, 1 when
some failed, 2 when all failed. A progress bar counts inputs, with their throughput and the time left.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bufferanytime.batch.inputs import collect_inputs
from bufferanytime.batch.manifest import (
    FAILED,
    SKIPPED,
    RunManifest,
    input_hash,
    input_stat,
    is_complete,
    manifest_path,
    model_identity,
    settings_hash,
)
from bufferanytime.batch.options import DEFAULT_MAX_RETRIES
from bufferanytime.batch.work import EVENTS_ENV, Job, WorkerSpec


def output_name(path: Path) -> str:
    """The output stem of an input, as :attr:`bufferanytime.io.video.VideoSource.name` gives it."""
    return path.stem if path.is_file() else path.resolve().name


def plan(paths: list[Path], out_root: Path, manifest: RunManifest, digest: str) -> tuple[list[Job], list[dict]]:
    """The jobs to run, and the rows of the inputs to skip (done before with the same input and settings)."""
    jobs, skipped, used = [], [], set()
    for index, path in enumerate(paths):
        key = os.path.abspath(path)
        name, suffix = output_name(path), 2
        base = name
        while name in used:
            name, suffix = f"{base}-{suffix}", suffix + 1
        used.add(name)
        target = str(out_root / name) if base else ""
        previous = manifest.previous(key)
        known = _known_hash(path, previous)
        if previous is not None and previous.get("output") == target and is_complete(previous, known, digest):
            skipped.append({**previous, "index": index, "status": SKIPPED})
            continue
        jobs.append(Job(index, key, target, known, digest))
    return jobs, skipped


def _known_hash(path: Path, previous: dict | None) -> str | None:
    """The input's hash when a previous row could let it be skipped: that row's, when the input's sizes and times
    are unchanged, else read now; None when there is no such row (the worker hashes it while it runs)."""
    if previous is None or not path.exists():
        return None
    try:
        if previous.get("input_stat") == input_stat(path):
            return previous.get("input_hash")
        return input_hash(path)
    except OSError:
        return None


def make_engine(args: argparse.Namespace, spec: WorkerSpec, out_root: Path):
    """The engine of ``--engine``; the Ray one checks that Ray is installed and ``--address`` answers."""
    retries = DEFAULT_MAX_RETRIES if args.max_retries is None else args.max_retries
    if args.engine == "local":
        from bufferanytime.batch.local import LocalEngine

        return LocalEngine(spec)
    from bufferanytime.batch.ray_engine import RayEngine

    return RayEngine(spec, args.address, args.num_workers, args.cpus_per_worker or 1.0, args.gpus_per_worker or 0.0,
                     retries, out_root)


def run_batch(args: argparse.Namespace, settings: object) -> int:
    """Run the command's inputs as a batch (see the module docstring); returns the exit code."""
    from bufferanytime.io.outputs import check_output_root

    out_root = check_output_root(args.output)
    paths = collect_inputs(args.inputs)
    spec = WorkerSpec(args.kind, args.model, args.per_frame, args.max_frames, args.stride, settings,
                      events=os.environ.get(EVENTS_ENV))
    engine = make_engine(args, spec, out_root)
    manifest = RunManifest(manifest_path(out_root, args.kind))
    counts = {"done": 0, "failed": 0, "skipped": 0}
    progress = None
    try:
        # with an input never run before there is work: the engine starts now, and its workers load the model
        # while the inputs are planned; otherwise only once the plan says some input must run again
        started = any(manifest.previous(os.path.abspath(path)) is None for path in paths)
        if started:
            engine.start(len(paths))
        jobs, skipped = plan(paths, out_root, manifest, _settings_digest(args, settings))
        for row in skipped:
            manifest.record(row)
        counts["skipped"] = len(skipped)
        progress = Progress(len(paths), len(skipped), args.kind, quiet=args.quiet)
        on_row = _recorder(manifest, counts, progress)
        named = _named(jobs, on_row)
        if named and not started:
            engine.start(len(named))
        progress.started()
        if named:
            engine.run(named, on_row)
    finally:
        try:
            engine.close()
        finally:
            manifest.flush()
            if progress is not None:
                progress.close()
    if not args.quiet:
        print(f"{args.kind}: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
              f"({manifest.path})")
    if counts["failed"] == 0:
        return 0
    return 2 if counts["failed"] >= len(paths) else 1


def _settings_digest(args: argparse.Namespace, settings: object) -> str:
    from bufferanytime.models import resolve_model_path

    run_options = {"per_frame": args.per_frame, "max_frames": args.max_frames, "stride": args.stride}
    return settings_hash(args.kind, model_identity(resolve_model_path(args.kind, args.model)), run_options,
                         settings)


def _recorder(manifest: RunManifest, counts: dict, progress: Progress) -> Callable[[dict], None]:
    """What is done with each finished row: into the manifest, the counts, the bar, and an error line."""
    def on_row(row: dict) -> None:
        manifest.record(row)
        counts[row["status"]] += 1
        if row["status"] == FAILED:
            progress.write(f"error: {row['error']}")
        progress.update(row)

    return on_row


def _named(jobs: list[Job], on_row: Callable[[dict], None]) -> list[Job]:
    """The jobs with an output folder; one without (an input with no name) fails in its row."""
    for job in jobs:
        if not job.target:
            on_row({"input": job.path, "index": job.index, "status": FAILED, "attempts": 0, "output": None,
                    "error": f"{job.path}: cannot name its outputs (the input has no name)"})
    return [job for job in jobs if job.target]


class Progress:
    """A bar over the inputs (done, failed and skipped all count), with inputs/s, frames/s and the time left."""

    def __init__(self, total: int, initial: int, kind: str, quiet: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=kind, unit="input", disable=quiet, file=sys.stderr)
        self.frames, self.start = 0, time.perf_counter()

    def started(self) -> None:
        """Throughput counts from here (after the engine and its models started)."""
        self.start = time.perf_counter()
        if not self.bar.disable:
            self.bar.start_t = self.bar.last_print_t = self.bar._time()

    def update(self, row: dict) -> None:
        self.frames += int(row.get("frames") or 0)
        rate = self.frames / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:.1f} frame/s", refresh=False)
        self.bar.update(1)

    def write(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
