"""Where ``adapt --engine local|ray`` reads the footage: the per-input work, in this process or on Ray workers.

Adaptation trains one model on all the inputs, in this process. What is done per input before training is
independent from one input to the next: opening it, hashing its bytes (recorded with the result), then decoding
the frames kept of it and resizing them to the model's size (:func:`bufferanytime.adapt.footage.load_footage`).
``--engine ray`` runs each input's work as a Ray task on ``--cpus-per-worker`` CPUs, at most ``--num-workers``
at once (default: as many as the cluster's CPUs hold), on the cluster at ``--address`` or on a Ray instance of
its own on this machine; the frames come back to this process, and the workers are let go before training. The
split and the sampling are decided here, and decoding and resizing give the same pixels in any process of a
machine, so the frames, and then the adapted model, are the same bytes on either engine (a node of a cluster with
other CPU features could round a resize differently). The inputs' paths must be readable from the workers (on a
cluster: a shared file system). Without ``--engine``, or with ``--engine local``, the footage is
read here, one input after the other.

Ray is imported here only, and only for ``--engine ray``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from bufferanytime.errors import InputError


class RayFootage:
    """A :data:`~bufferanytime.adapt.footage.Mapper` on Ray; :meth:`start` joins or starts Ray and refuses
    resources no node has, :meth:`close` leaves it (called again, it does nothing)."""

    name = "ray"

    def __init__(self, address: str | None, workers: int | None, cpus: float):
        from bufferanytime.batch.ray_engine import check_address, import_ray

        self.ray = import_ray()
        check_address(address)
        self.address, self.workers, self.cpus = address, workers, cpus
        self.started = False
        self.used = 0  # the most tasks run at once
        self.seconds = 0.0  # spent in the mapped work, as this process waited for it

    def start(self) -> None:
        """Join or start Ray (see :func:`bufferanytime.batch.ray_engine.init_ray`), and check that a node can
        hold a worker of ``cpus`` CPUs; InputError in one line otherwise."""
        from bufferanytime.batch.ray_engine import init_ray, worker_count

        init_ray(self.ray, self.address)
        self.started = True
        try:
            self.limit = worker_count(self.ray, self.workers, self.cpus, None, jobs=1 << 30)
        except BaseException:
            self.close()
            raise

    def __call__(self, function: Callable, calls: list[tuple]) -> list:
        """``[function(*args) for args in calls]``, each on a Ray worker, at most :attr:`limit` at once; an
        InputError raised by one is raised here with its message."""
        from bufferanytime.batch.ray_engine import _first_line

        began = time.perf_counter()
        task = self.ray.remote(num_cpus=self.cpus)(_run_with_threads)
        threads = max(1, math.floor(self.cpus))
        results: list = [None] * len(calls)
        running: dict = {}
        waiting = list(enumerate(calls))
        try:
            while waiting or running:
                while waiting and len(running) < self.limit:
                    index, args = waiting.pop(0)
                    running[task.remote(function, args, threads)] = index
                self.used = max(self.used, len(running))
                done = self.ray.wait(list(running), num_returns=1)[0]
                for ref in done:
                    results[running.pop(ref)] = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            raise InputError(_first_line(exc)) from None
        finally:
            # The reads still running are left to end (or to end with a Ray started for the run): cancelling them
            # while their replies arrive aborted this process in Ray's task manager (a failed internal check).
            self.seconds += time.perf_counter() - began
        return results

    def describe(self) -> dict:
        """What the record of the run says of the engine."""
        return {"name": self.name, "address": self.address, "workers": self.used, "cpus_per_worker": self.cpus,
                "read_s": round(self.seconds, 3)}

    def close(self) -> None:
        """Leave Ray (the workers end with it when this run started it)."""
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
        self.started = False


def _run_with_threads(function: Callable, args: tuple, threads: int) -> object:
    """On a worker: ``function(*args)`` with OpenCV on the worker's CPUs."""
    import cv2

    cv2.setNumThreads(threads)
    return function(*args)


def footage_engine(engine: str | None, address: str | None, workers: int | None,
                   cpus: float | None) -> RayFootage | None:
    """The engine of ``--engine`` (None: read here), started; InputError for an engine that cannot start."""
    if engine != "ray":
        return None
    ray_footage = RayFootage(address, workers, cpus or 1.0)
    ray_footage.start()
    return ray_footage
