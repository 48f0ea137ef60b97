"""The local engine: one :class:`~bufferanytime.batch.work.Worker` in the command's own process, no Ray."""

from __future__ import annotations

from collections.abc import Callable

from bufferanytime.batch.work import Job, Worker, WorkerSpec


class LocalEngine:
    """Runs the jobs one after the other with one model load; an interrupt stops it between or inside a job
    (that job's staging folder is removed by :class:`~bufferanytime.io.outputs.OutputFiles`)."""

    name = "local"

    def __init__(self, spec: WorkerSpec):
        self.spec = spec

    def start(self, jobs: int) -> None:
        self.worker = Worker(self.spec)

    def run(self, jobs: list[Job], on_row: Callable[[dict], None]) -> None:
        for job in jobs:
            on_row(self.worker.run(job))

    def close(self) -> None:
        pass
