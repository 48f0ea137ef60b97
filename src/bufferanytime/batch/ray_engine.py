"""The Ray engine: a pool of Ray Core actors, one :class:`~bufferanytime.batch.work.Worker` (one model load) each.

The driver (the command's process) hands each ready actor one input at a time and records each row as it comes
back. An actor killed mid-video (SIGKILL, out of memory, its node lost) is restarted by Ray with the model loaded
again; only the input it was running is sent again, up to ``--max-retries`` times, and every other result
stays. Its half-written staging folder is removed by the next write in the same output folder and, at the
latest, when the run ends. On Ctrl-C (or SIGTERM) every actor is killed, the staging folders of the killed
workers are removed, and the finished outputs stay. Ray is imported here only, never by the local engine.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from bufferanytime.batch.manifest import FAILED
from bufferanytime.batch.work import Job, Worker, WorkerSpec
from bufferanytime.errors import InputError

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAISED = re.compile(r"^(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")  # a traceback's last line
INSTALL_HINT = "pip install 'bufferanytime[ray]'"
PROBE_TIMEOUT_S = 5.0  # --address: a cluster that does not accept a connection within this is unreachable
SWEEP_TIMEOUT_S = 30.0  # at the end, how long to wait for killed workers to be gone before removing their staging
WAIT_S = 1.0  # the driver wakes at least this often
PROBE_S = 0.5  # a restarting worker is asked again after this long


def import_ray():
    """The ``ray`` module, or InputError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def check_address(address: str | None) -> None:
    """InputError when ``--address`` is malformed or nothing accepts a connection there (before Ray is asked,
    which would keep retrying for a minute)."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise InputError(f"--address {address}: no Ray cluster answers there ({reason.lower()})") from None


def init_ray(ray, address: str | None) -> None:
    """Join the cluster at ``address``, or start a Ray instance of this run's own on this machine ("local": never
    one that happens to run here already); InputError in one line when Ray cannot start or answer."""
    handler = signal.getsignal(signal.SIGTERM)  # ray.init replaces it: SIGTERM must still stop the run cleanly
    try:
        ray.init(address=address or "local", num_cpus=None if address else os.cpu_count(),
                 include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ...: one line, no traceback
        where = f"--address {address}" if address else "--engine ray"
        raise InputError(f"{where}: cannot start or join Ray ({_first_line(exc)})") from None
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


def worker_count(ray, workers: int | None, cpus: float, gpus: float | None, jobs: int) -> int:
    """Workers to start: ``workers``, else as many as the cluster's resources hold, at most ``jobs``; InputError
    when no node of the cluster can hold one. ``gpus`` None: the command has no GPU option (none are asked for)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= (gpus or 0) for n in nodes):
        largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        asked = f"--cpus-per-worker {cpus:g}" + ("" if gpus is None else f" --gpus-per-worker {gpus:g}")
        has = f"{largest.get('CPU', 0):g} CPUs" + ("" if gpus is None else f", {largest.get('GPU', 0):g} GPUs")
        raise InputError(f"{asked}: no node of the Ray cluster has that much (largest: {has})")
    if workers:
        return min(workers, jobs)
    total = ray.cluster_resources()
    fit = int(total.get("CPU", 0) // cpus)
    if gpus:
        fit = min(fit, int(total.get("GPU", 0) // gpus))
    return max(1, min(fit, jobs))


class RayEngine:
    """See the module docstring. ``start`` joins or starts Ray and refuses resources no node has."""

    name = "ray"

    def __init__(self, spec: WorkerSpec, address: str | None, workers: int | None, cpus: float, gpus: float,
                 max_retries: int, out_root: object):
        self.ray = import_ray()
        check_address(address)
        self.spec, self.address, self.workers, self.cpus, self.gpus = spec, address, workers, cpus, gpus
        self.max_retries, self.out_root = max_retries, out_root
        self.actors: list = []
        self.start_errors: list[str] = []  # why actors could not start (e.g. the model failed to load)
        self.pids: set[int] = set()  # worker processes on this host, waited for before their staging is removed

    def start(self, jobs: int) -> None:
        ray = self.ray
        init_ray(ray, self.address)
        try:
            count = worker_count(ray, self.workers, self.cpus, self.gpus, jobs)
        except BaseException:
            ray.shutdown()
            raise
        self.spec.threads = max(1, math.floor(self.cpus))
        actor = ray.remote(Worker).options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=-1,
                                           max_task_retries=0)
        self.actors = [actor.remote(self.spec) for _ in range(count)]

    def run(self, jobs: list[Job], on_row: Callable[[dict], None]) -> None:
        """Run every job on the pool; ``on_row`` gets each finished row (done or failed), in finishing order.

        An actor gets a job only once it answered a probe (its model is loaded); one lost mid-job is probed again
        until Ray has restarted it, so a restart never uses up the retries of the next job."""
        ray = self.ray
        pending: deque[Job] = deque(jobs)
        probes = {actor.pid.remote(): actor for actor in self.actors}  # actors not yet known to be ready
        restarting: list[tuple[float, object]] = []  # (when to probe again, actor)
        idle: list = []
        running: dict = {}  # future -> (actor, job)
        while pending or running:
            now = time.monotonic()
            for entry in [e for e in restarting if e[0] <= now]:
                restarting.remove(entry)
                probes[entry[1].pid.remote()] = entry[1]
            while idle and pending:
                actor, job = idle.pop(), pending.popleft()
                running[actor.run.remote(job)] = (actor, job)
            if not running and not probes and not restarting:
                raise InputError(f"no Ray worker could start: {self.start_errors[0] if self.start_errors else '?'}")
            waiting = [*probes, *running]
            ready = ray.wait(waiting, num_returns=1, timeout=WAIT_S)[0] if waiting else time.sleep(PROBE_S) or []
            for ref in ready:
                if ref in probes:
                    self._probed(ref, probes.pop(ref), idle, restarting)
                    continue
                actor, job = running.pop(ref)
                row = self._result(ref, job, pending)
                if row is None:  # the actor was lost: probe it until Ray has restarted it
                    restarting.append((time.monotonic(), actor))
                    continue
                idle.append(actor)
                self._note_worker(row.get("worker"))
                on_row(row)

    def _probed(self, ref, actor, idle: list, restarting: list) -> None:
        """An actor answered its probe (idle), is still restarting (probed again soon) or is gone for good."""
        try:
            self.pids.add(self.ray.get(ref))
            idle.append(actor)
        except self.ray.exceptions.ActorUnavailableError:
            restarting.append((time.monotonic() + PROBE_S, actor))
        except self.ray.exceptions.RayError as exc:
            self.start_errors.append(_first_line(exc))

    def _note_worker(self, worker: str | None) -> None:
        host, _, pid = str(worker or "").rpartition(":")
        if host == socket.gethostname() and pid.isdigit():
            self.pids.add(int(pid))

    def _result(self, ref, job: Job, pending: deque[Job]) -> dict | None:
        """The row of a finished job; None when its worker was lost and the job is queued again."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayActorError as exc:
            if job.attempt <= self.max_retries:
                job.attempt += 1
                pending.appendleft(job)
                return None
            reason = f"its worker was lost {job.attempt} times, the last: {_first_line(exc)}"
        except self.ray.exceptions.RayError as exc:
            reason = _first_line(exc)
        return {"input": job.path, "index": job.index, "output": job.target, "settings_hash": job.settings_hash,
                "status": FAILED, "error": f"{job.path}: {reason}", "attempts": job.attempt}

    def close(self) -> None:
        """Kill the workers, remove the staging folders of the killed ones, and leave Ray."""
        from bufferanytime.io.outputs import pid_alive, remove_stale_staging

        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if self.ray.is_initialized():
            self.ray.shutdown()
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while any(pid_alive(pid) for pid in self.pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        remove_stale_staging(self.out_root)


def _first_line(exc: BaseException) -> str:
    """What a Ray error says in one line: the worker's own error when its traceback ends with one (an InputError's
    message as it is, another as ``Type: message``), else the first line, without terminal colours."""
    lines = [ANSI.sub("", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        match = RAISED.match(line)
        if match:
            return match.group(2) if match.group(1) == "InputError" else f"{match.group(1)}: {match.group(2)}"
    return lines[0] if lines else type(exc).__name__
