"""One unit of work of a batch run (:class:`Job`: one input) and the :class:`Worker` that runs it.

A worker loads the model once and runs any number of jobs; both engines use it, the local one in the command's
process and the Ray one as an actor per worker process, so their outputs are the same bytes. A job opens its
input (a bad one fails here, in its own row), runs :func:`~bufferanytime.inference.pipeline.run_video` (staged,
atomic, per input), then measures the quality figures. It returns the manifest row of the input.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bufferanytime.batch.manifest import DONE, FAILED, input_hash, input_stat
from bufferanytime.errors import InputError

#: Environment variable naming a file where workers append one JSON line as they start and commit each input
#: (an audit trail of which process wrote what; the tests read it to see that no input is written twice).
EVENTS_ENV = "BUFFERANYTIME_BATCH_EVENTS"


@dataclass
class Job:
    """One input: its position in the run, its path, its output folder, and the hashes known before it runs
    (``input_hash`` None: computed by the worker, as no previous row could have let it be skipped)."""

    index: int
    path: str
    target: str
    input_hash: str | None
    settings_hash: str
    attempt: int = 1


@dataclass
class WorkerSpec:
    """What every worker needs to load the model and run jobs (sent once to each worker)."""

    kind: str
    model: str | None
    per_frame: bool
    max_frames: int | None
    stride: int
    settings: object  # InferenceSettings
    quality: bool = True
    events: str | None = None
    threads: int | None = None  # torch threads of a Ray worker (its CPUs); None: torch's default


class Worker:
    """The model loaded once on this process's device; :meth:`run` runs one job and returns its manifest row."""

    def __init__(self, spec: WorkerSpec):
        import torch

        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        start = time.perf_counter()
        self.predictor, self.model_info = load_predictor(spec)
        self.load_s = round(time.perf_counter() - start, 3)

    def pid(self) -> int:
        return os.getpid()

    def run(self, job: Job) -> dict:
        """Run ``job``; a bad input or a failed write gives a failed row (never an exception)."""
        started = time.time()
        self._event("start", job)
        row = {"input": job.path, "index": job.index, "output": job.target, "settings_hash": job.settings_hash,
               "worker": self.name, "attempts": job.attempt, "model_load_s": self.load_s}
        try:
            row |= self._run(job)
            row["status"] = DONE
            self._event("commit", job)
        except InputError as exc:
            row |= {"status": FAILED, "error": str(exc)}
        except OSError as exc:
            row |= {"status": FAILED, "error": f"{job.path}: cannot write the {self.spec.kind} outputs to "
                    f"{job.target} ({exc.strerror or exc}); nothing was written for this input"}
        except Exception as exc:  # a bug must not stop the other inputs; its line names the input and the cause
            last = traceback.extract_tb(exc.__traceback__)[-1]
            row |= {"status": FAILED, "error": f"{job.path}: {type(exc).__name__}: {exc} "
                    f"({Path(last.filename).name}:{last.lineno})"}
        row["timings"] = {**row.get("timings", {}), "wall_s": round(time.time() - started, 3)}
        return row

    def _run(self, job: Job) -> dict:
        from bufferanytime.cli.args import check_outside_input
        from bufferanytime.inference.pipeline import run_video
        from bufferanytime.io.video import open_video

        spec, path = self.spec, Path(job.path)
        source = open_video(path, max_frames=spec.max_frames, stride=spec.stride, per_frame=spec.per_frame)
        stat = input_stat(path)
        digest = job.input_hash or input_hash(path)
        target = check_outside_input(source, Path(job.target))
        start = time.perf_counter()
        meta = run_video(self.predictor.model, source, target, spec.settings, self.model_info, progress=False,
                         predictor=self.predictor)
        run_s = time.perf_counter() - start
        row = {"input_hash": digest, "input_stat": stat, "frames": meta["frames"], "written": meta["written"],
               "error": None, "timings": {"run_s": round(run_s, 3), "model_s": meta["timings"]["model_s"]}}
        if spec.quality:
            start = time.perf_counter()
            row["quality"] = self._quality(source, target, meta)
            row["timings"]["quality_s"] = round(time.perf_counter() - start, 3)
        return row

    def _quality(self, source: object, target: Path, meta: dict) -> dict | None:
        from bufferanytime.batch.quality import quality_figures
        from bufferanytime.tasks import get_task

        array = meta["array"]
        if "npz" not in self.spec.settings.save:
            return None
        try:
            depth = get_task(self.spec.kind).channels == 1  # scale jitter: for depth, relative or metric
            return quality_figures(source, target / array["file"], array["key"], depth=depth)
        except Exception as exc:  # the outputs are written: a figure that cannot be measured is not a failed input
            return {"error": f"{type(exc).__name__}: {exc}"}

    def _event(self, what: str, job: Job) -> None:
        if not self.spec.events:
            return
        line = json.dumps({"event": what, "input": job.path, "attempt": job.attempt, "worker": self.name,
                           "time": time.time()}) + "\n"
        fd = os.open(self.spec.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def load_predictor(spec: WorkerSpec) -> tuple[object, dict]:
    """The model on its device, checked against the settings, and what the meta file records about it (the same
    as ``bufferanytime depth|normal`` without ``--engine`` records)."""
    from bufferanytime.inference.pipeline import load_predictor as load

    return load(spec.kind, spec.model, spec.settings, per_frame=spec.per_frame)
