"""Loaded models kept for the next job that needs them, released least recently used when memory runs short."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .console import Progress


@dataclass
class Held:
    """One loaded session and what `stablekit ps` says about it."""

    session: Any
    plan: Any  # the stablekit.planning.Plan it was loaded for
    loaded_at: float = field(default_factory=time.monotonic)
    used_at: float = field(default_factory=time.monotonic)
    load_seconds: float = 0.0
    measured_bytes: int | None = None  # what loading it added to the device (or process) memory, when known
    uses: int = 0

    def describe(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        p = self.plan.device_plan
        return {"model": self.plan.spec.id, "device": p.device, "dtype": p.dtype, "offload": p.offload,
                "planned_gib": round(p.weights_gib, 3),
                "measured_gib": None if self.measured_bytes is None else round(self.measured_bytes / 2**30, 3),
                "load_seconds": round(self.load_seconds, 2), "uses": self.uses,
                "idle_seconds": round(now - self.used_at, 1), "loaded_seconds": round(now - self.loaded_at, 1)}


class SessionPool:
    """Sessions by their engine's key. A new one loads beside those held while the weights of all, plus the
    new plan's peak, fit the plan's budget; otherwise the least recently used are released first.

    One thread runs jobs (acquire, release); `status()` may be read from others (a server's `ps`).
    """

    def __init__(self, progress: Progress = Progress()) -> None:
        self.progress = progress
        self._held: OrderedDict[tuple, Held] = OrderedDict()
        self._lock = threading.Lock()  # guards _held's structure for readers in other threads
        self.loads: list[str] = []  # model ids in load order: what tests and the manifest count

    def acquire(self, plan, engine) -> Any:
        """The loaded session for `plan`, loading it (after making room) when none is held."""
        key = engine.session_key(plan)
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                self._held.move_to_end(key)
        if held is None:
            self._make_room(plan)
            before = _resident_bytes(plan.device_plan.device)
            started = time.monotonic()
            session = engine.load(plan, self.progress)
            after = _resident_bytes(plan.device_plan.device)
            held = Held(session, plan, load_seconds=time.monotonic() - started,
                        measured_bytes=after - before if before is not None and after is not None else None)
            with self._lock:
                self._held[key] = held
            self.loads.append(plan.spec.id)
        held.uses += 1
        held.used_at = time.monotonic()
        return held.session

    def held(self) -> list[str]:
        with self._lock:
            return [held.plan.spec.id for held in self._held.values()]

    def status(self) -> list[dict[str, Any]]:
        """Every loaded model, least recently used first, with its memory and idle time."""
        now = time.monotonic()
        with self._lock:
            return [held.describe(now) for held in self._held.values()]

    def release_idle(self, keep_alive: float) -> list[str]:
        """Release every session unused for `keep_alive` seconds (a server's keep-alive); returns their ids."""
        now = time.monotonic()
        return self._release(lambda held: now - held.used_at >= keep_alive, "idle")

    def unload(self, model: str | None = None) -> list[str]:
        """Release the sessions of `model` (its id or an alias), or all of them; returns the ids released."""
        def matches(held: Held) -> bool:
            spec = held.plan.spec
            return model is None or model == spec.id or model in spec.aliases
        return self._release(matches, None)

    def _release(self, which, why: str | None) -> list[str]:
        with self._lock:
            keys = [key for key, held in self._held.items() if which(held)]
            gone = [self._held.pop(key) for key in keys]
        for held in gone:
            if why:
                self.progress.note(f"releasing {held.plan.spec.id} ({why})")
            _close(held.session, held.plan)
        return [held.plan.spec.id for held in gone]

    def _make_room(self, plan) -> None:
        budget = plan.device_plan.budget_gib
        while self._held:
            with self._lock:
                resident = sum(held.plan.device_plan.weights_gib for held in self._held.values()
                               if held.plan.device_plan.device == plan.device_plan.device)
            if resident + plan.device_plan.peak_gib <= budget:
                return
            self.release_oldest()

    def release_oldest(self) -> None:
        with self._lock:
            _, held = self._held.popitem(last=False)
        self.progress.note(f"releasing {held.plan.spec.id} to make room")
        _close(held.session, held.plan)

    def close(self) -> None:
        """Release everything (the end of a run)."""
        while True:
            with self._lock:
                if not self._held:
                    return
                _, held = self._held.popitem(last=False)
            _close(held.session, held.plan)


def _close(session, plan) -> None:
    from .devices import free_memory

    close = getattr(session, "close", None)
    if close is not None:
        close()
    free_memory(plan.device_plan.device)


def _resident_bytes(device: str) -> int | None:
    """Memory in use where a model lands: the accelerator's allocations, else this process's resident set
    (Linux); None where neither can be read cheaply."""
    import os
    import sys

    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated(torch.device(device)))
    if device == "cpu":
        try:
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None
    return None
