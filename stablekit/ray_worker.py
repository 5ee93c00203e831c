"""A Ray worker of `stablekit batch --engine ray`: the local engine's batch loop in a process of its own.

Each worker holds a session pool (the same LRU rule and device planner as a local batch, on the worker's own
device) and runs one job per call through stablekit.batch_run.Driver, so out-of-memory retries, failure
records and model reuse are the local engine's. Its sink ships the finished files back as bytes
(stablekit.shipping); the driver alone writes outputs, sidecars and the manifest. Ray is not imported
here: stablekit.distributed wraps this class with `ray.remote`.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

from .batch_progress import BatchProgress
from .console import Progress


class _WorkerProgress(BatchProgress):
    """Progress inside a worker: messages are kept for the driver to show; per-job lines are the driver's, and
    step counts stay here (they would reach the driver only when the job is over)."""

    def finished(self, record: dict[str, Any]) -> None:
        pass

    def task(self, description: str, total: int, then: str | None = None):
        return Progress.task(self, description, total, then)


class RenderWorker:
    """One worker: `render(task)` runs one job and returns its record and its outputs as bytes."""

    def __init__(self, index: int, env: dict[str, str] | None = None) -> None:
        # This process is the worker's own: settings the driver passes explicitly (a pre-started cluster's
        # workers do not inherit the driver's environment) apply to it before any model library is imported.
        os.environ.update(env or {})
        from .batch_run import Driver
        from .console import Console
        from .shipping import ShippingSink

        self.index = index
        self.messages = io.StringIO()
        console = Console(stdout=self.messages, stderr=self.messages, terminal=False)
        self.progress = _WorkerProgress(console, terminal=False)
        self.sink = ShippingSink()
        self.records: list[dict[str, Any]] = []
        self.driver = Driver(self.sink, self.progress, record=self.records.append)
        self.hardware: dict[str | None, Any] = {}

    def pid(self) -> int:
        """This worker's process id (what a test kills), and proof that it started."""
        return os.getpid()

    def render(self, task: dict[str, Any]) -> dict[str, Any]:
        """Plan the job on this worker's device and run it; a failure is its record, never an exception."""
        from .batch_run import Planned
        from .errors import StablekitError
        from .ray_cluster import private_folder
        from .runner import plan_job
        from .shipping import restore_inputs, unpack_inputs

        entry = task["entry"]
        self.records.clear()
        self.messages.seek(0)
        self.messages.truncate()
        inputs = Path(private_folder("inputs"))
        try:
            try:
                job = unpack_inputs(entry.job, task.get("inputs") or {}, inputs)
                plan = restore_inputs(plan_job(job, self._hardware(job.request.device)), entry.job)
                item = Planned(entry, plan)
            except StablekitError as err:
                item = Planned(entry, error=err)
            self.driver.run_one(item)
        finally:
            shutil.rmtree(inputs, ignore_errors=True)
        (record,) = self.records
        shipped = list(self.sink.shipped) if record["status"] == "done" else []
        self.sink.clear()
        return {"record": record, "outputs": shipped, "held": self.driver.pool.held(), "pid": os.getpid(),
                "messages": self.messages.getvalue()}

    def held(self) -> list[str]:
        return self.driver.pool.held()

    def close(self) -> None:
        """Release every model and the temporary folder (the end of a batch)."""
        self.driver.close()
        self.sink.close()

    def _hardware(self, device: str | None):
        from .devices import probe

        if device not in self.hardware:
            self.hardware[device] = probe(device)
        return self.hardware[device]
