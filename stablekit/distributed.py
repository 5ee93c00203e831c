"""`stablekit batch --engine ray`: a batch's pending jobs rendered by Ray actors, their outputs written here.

`RayDriver` takes the place of stablekit.batch_run.Driver in stablekit.batch.run_batch, which still reads and
checks the file, skips what is done, plans (a bad line stops everything) and writes the manifest. The jobs go
to `RenderWorker` actors (stablekit.ray_worker), a job to a free worker already holding its model when there
is one. Each worker returns its job's record and files as bytes; this process alone writes them through the
batch's sink, so outputs, sidecars and the manifest are the local engine's, on this machine.

Faults: a worker process that dies is restarted by Ray (`max_restarts`) and its job run again
(`max_task_retries`); when those are used up the job is recorded as failed. A job that fails on its own
merits is recorded by the worker once, as in a local batch. Ctrl-C and SIGTERM record the jobs in flight as
interrupted, stop the workers and a private Ray instance.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch_progress import BatchProgress
from .batch_run import Interrupted, Planned, _sigterm_as_interrupt, record_of, remove
from .errors import StablekitError, UsageError
from .manifest import owner, record_key
from .sink import Sink

# Settings a worker on this machine takes from the driver (Ray passes no environment to a cluster's workers).
_FORWARDED = ("STABLEKIT_", "HF_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")


@dataclass(frozen=True)
class RayOptions:
    """--address, --workers, --gpus-per-worker, --cpus-per-worker, and Ray's bounds on restarts and retries."""

    address: str | None = None  # None: a private local instance on 127.0.0.1
    workers: int | None = None  # None: one per GPU (per `cpus_per_worker` CPUs on a CPU-only cluster)
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0
    cpus_per_worker: float = 1.0
    max_restarts: int = 3  # times Ray restarts a worker process that died
    max_task_retries: int = 2  # times a job whose worker died is run again
    start_timeout_s: float = 600.0  # for the workers to start (a busy machine, a cluster scaling up)

    def check(self) -> RayOptions:
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers {self.workers}: give 1 or more")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker {self.gpus_per_worker:g}: give 0 or more (0.5 packs two per GPU)")
        if self.cpus_per_worker <= 0:
            raise UsageError(f"--cpus-per-worker {self.cpus_per_worker:g}: give more than 0")
        return self

    def driver(self) -> Callable[..., RayDriver]:
        """A factory with Driver's signature, for run_batch(driver=...)."""
        def make(sink: Sink, progress: BatchProgress, **kwargs: Any) -> RayDriver:
            return RayDriver(sink, progress, options=self, **kwargs)
        return make


@dataclass
class Worker:
    """One actor as the driver sees it: its process, the models it holds, the job it runs."""

    index: int
    actor: Any
    pid: int | None = None
    held: list[str] = field(default_factory=list)
    item: Planned | None = None
    ref: Any = None
    alive: bool = True

    def models(self) -> set[str]:
        running = {self.item.entry.job.spec.id} if self.item is not None else set()
        return set(self.held) | running


class RayDriver:
    """Runs planned entries on Ray workers into `sink`, handing each job's record to `record` as it ends."""

    def __init__(self, sink: Sink, progress: BatchProgress, *, record: Callable[[dict], None],
                 fail_fast: bool = False, output_dir: Path | None = None, previous: dict[str, dict] | None = None,
                 options: RayOptions = RayOptions()) -> None:
        self.sink, self.progress, self.record, self.fail_fast = sink, progress, record, fail_fast
        self.output_dir, self.previous, self.options = output_dir, previous or {}, options.check()
        self.workers: list[Worker] = []
        self.failed = False

    def run(self, planned: list[Planned]) -> None:
        from .ray_cluster import connect, import_ray

        ray = import_ray()
        remote: list[Planned] = []
        for item in planned:  # an input file the driver cannot read fails here; the workers plan the rest
            if item.plan is None and isinstance(item.error, UsageError):
                self._finish(item, "failed", error=item.error)
            else:
                remote.append(item)
        if not remote or (self.failed and self.fail_fast):
            return  # nothing to render: Ray is not started at all
        with _sigterm_as_interrupt() as signals:
            try:
                with connect(self.options.address, num_cpus=self._private_cpus()) as cluster:
                    try:
                        self._start(ray, cluster, len(remote))
                        self._loop(ray, remote)
                    finally:
                        self._stop(ray)
            except KeyboardInterrupt:
                raise Interrupted(signals.received or signal.SIGINT) from None

    # --- workers -----------------------------------------------------------------------------------------

    def _private_cpus(self) -> int | None:
        """Logical CPUs of a private instance: enough for the workers asked for (Ray waits forever otherwise)."""
        if self.options.workers is None:
            return None
        return max(os.cpu_count() or 1, math.ceil(self.options.workers * self.options.cpus_per_worker))

    def _start(self, ray, cluster, jobs: int) -> None:
        from .ray_worker import RenderWorker

        options = self.options
        gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if cluster.gpus >= 1 else 0.0)
        count = options.workers
        if count is None:
            count = int(cluster.gpus // gpus) if gpus else int(cluster.cpus // options.cpus_per_worker)
            count = max(1, min(count, jobs))
        if count * gpus > cluster.gpus or count * options.cpus_per_worker > cluster.cpus:
            raise UsageError(f"{count} workers x {gpus:g} GPUs and {options.cpus_per_worker:g} CPUs each need more "
                             f"than {cluster.address} has ({cluster.gpus:g} GPUs, {cluster.cpus:g} CPUs)",
                             hint="give fewer --workers, or smaller --gpus-per-worker / --cpus-per-worker")
        env = {key: value for key, value in os.environ.items() if key.startswith(_FORWARDED)} \
            if cluster.single_machine else {}
        actor = ray.remote(RenderWorker).options(num_cpus=options.cpus_per_worker, num_gpus=gpus,
                                                 max_restarts=options.max_restarts,
                                                 max_task_retries=options.max_task_retries)
        started = time.monotonic()
        self.workers = [Worker(index, actor.remote(index, env)) for index in range(1, count + 1)]
        try:
            pids = ray.get([worker.actor.pid.remote() for worker in self.workers], timeout=options.start_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise StablekitError(f"the Ray workers did not start within {options.start_timeout_s:.0f} s on "
                                 f"{cluster.address}", hint="check `ray status` for free resources") from None
        for worker, pid in zip(self.workers, pids, strict=True):
            worker.pid = pid
        self.progress.say(f"ray: {count} worker{'s' if count != 1 else ''} on {cluster.address} "
                          f"({gpus:g} GPU, {options.cpus_per_worker:g} CPU each; pids "
                          f"{', '.join(map(str, pids))}), started in {time.monotonic() - started:.1f} s")

    def _stop(self, ray) -> None:
        """Release the workers' models and folders, then end them (a cluster's actors would outlive us)."""
        closing = [worker.actor.close.remote() for worker in self.workers if worker.alive and worker.item is None]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=60)
        except Exception:  # noqa: BLE001 - a worker that cannot close is ended below anyway
            pass
        for worker in self.workers:
            ray.kill(worker.actor, no_restart=True)
        self.workers = []

    # --- jobs ----------------------------------------------------------------------------------------------

    def _loop(self, ray, pending: list[Planned]) -> None:
        try:
            while True:
                if not (self.failed and self.fail_fast):
                    for worker in self.workers:
                        if worker.alive and worker.item is None and pending:
                            self._submit(worker, self._pick(worker, pending))
                busy = [worker for worker in self.workers if worker.item is not None]
                if not busy:
                    break
                ready, _ = ray.wait([worker.ref for worker in busy], num_returns=1, timeout=1.0)
                for worker in busy:
                    if worker.ref in ready:
                        self._collect(ray, worker)
            if pending and not (self.failed and self.fail_fast):  # every worker is gone for good
                for item in pending:
                    self._finish(item, "failed", error=StablekitError(
                        "no Ray worker is left to run it (each died more often than max_restarts allows)",
                        hint="see the workers' errors above; rerun to retry the jobs not done"))
        except KeyboardInterrupt:
            for worker in self.workers:
                if worker.item is not None:
                    self._finish(worker.item, "interrupted")
                    worker.item = None
            raise

    def _pick(self, worker: Worker, pending: list[Planned]) -> Planned:
        """The next job for `worker`: one whose model it holds; else one whose model no other worker holds or
        runs (spreading the models); else the first waiting."""
        for index, item in enumerate(pending):
            if item.entry.job.spec.id in worker.held:
                return pending.pop(index)
        others = {model for other in self.workers if other is not worker and other.alive for model in other.models()}
        for index, item in enumerate(pending):
            if item.entry.job.spec.id not in others:
                return pending.pop(index)
        return pending.pop(0)

    def _submit(self, worker: Worker, item: Planned) -> None:
        from .shipping import pack_inputs

        try:
            inputs = pack_inputs(item.entry.job)
        except StablekitError as err:
            self._finish(item, "failed", error=err)
            return
        self.progress.begin(item.entry.label)
        worker.item, worker.ref = item, worker.actor.render.remote({"entry": item.entry, "inputs": inputs})

    def _collect(self, ray, worker: Worker) -> None:
        item, ref = worker.item, worker.ref
        worker.item = worker.ref = None
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as err:  # the process died more often than retries allow
            worker.alive = self._alive(ray, worker)
            self._finish(item, "failed", worker=worker, error=StablekitError(
                f"Ray worker {worker.index} died while running it, {self.options.max_task_retries} retries "
                f"included ({type(err).__name__})",
                hint="a worker that dies on one job every time points at that job (memory? a crash in the "
                     "model?); rerun to retry it"))
            return
        except ray.exceptions.RayError as err:  # an error outside the job's own code (it records its failures)
            self._finish(item, "failed", worker=worker, error=err)
            return
        if result["pid"] != worker.pid:
            self.progress.say(f"ray: worker {worker.index} was restarted (pid {worker.pid} -> {result['pid']})")
            worker.pid = result["pid"]
        worker.held = list(result["held"])
        for line in result["messages"].splitlines():
            self.progress.say(f"worker {worker.index}: {line}")
        self._land(worker, item, result)

    def _alive(self, ray, worker: Worker) -> bool:
        try:
            worker.pid = ray.get(worker.actor.pid.remote(), timeout=self.options.start_timeout_s)
            worker.held = []
            return True
        except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            self.progress.say(f"ray: worker {worker.index} is gone for good")
            return False

    def _land(self, worker: Worker, item: Planned, result: dict[str, Any]) -> None:
        """Write a finished job's files through the sink and record it (as the worker recorded it)."""
        from .shipping import as_output

        record = dict(result["record"])
        entry, sink = item.entry, self.sink
        if record["status"] == "done":
            if hasattr(sink, "begin"):
                sink.begin(entry)
            start = len(sink.results)
            try:
                for shipped in result["outputs"]:
                    saved = sink.recorded
                    sink.recorded = {**saved, "versions": shipped.versions}  # what rendered it, not what wrote it
                    try:
                        sink.emit(shipped.job, as_output(shipped))
                    finally:
                        sink.recorded = saved
            except StablekitError as err:
                for out in sink.results[start:]:
                    for name in (out.get("path"), out.get("sidecar"), *out.get("files", [])):
                        if name:
                            remove(Path(name))
                del sink.results[start:]
                self._finish(item, "failed", worker=worker, error=err, plan=record.get("plan"))
                return
            record["outputs"] = list(dict.fromkeys(out["path"] for out in sink.results[start:] if "path" in out))
        self._finish(item, record["status"], worker=worker, record=record)
        if record["status"] == "done":
            self._drop_stale(entry, record["outputs"])

    def _finish(self, item: Planned, status: str, *, worker: Worker | None = None, record: dict | None = None,
                error: BaseException | None = None, plan: dict | None = None) -> None:
        """Record the job (the worker's record, or one made here) and show it."""
        entry = item.entry
        if record is None:
            details = None
            if error is not None:
                message = error.message if isinstance(error, StablekitError) else str(error) or type(error).__name__
                hint = error.hint if isinstance(error, StablekitError) else None
                details = {"type": type(error).__name__, "message": message, "hint": hint}
                self.progress.error(f"{entry.label}: {message}", hint)
            record = record_of(entry, status, outputs=[], plan=plan, error=details)
        record["output"] = record_key(entry.job, self.output_dir) if self.output_dir else None
        if worker is not None:
            record["worker"] = {"index": worker.index, "pid": worker.pid}
        if status == "failed":
            self.failed = True
        self.record(record)
        self.progress.finished(record)

    def _drop_stale(self, entry, outputs: list[str]) -> None:
        """Outputs of the job's earlier run that this run did not write again (it makes fewer now) go."""
        for name in (self.previous.get(entry.id) or {}).get("outputs") or []:
            path = Path(name)
            if name not in outputs and owner(path) == entry.id:
                remove(path)
                remove(path.with_name(path.name + ".json"))
