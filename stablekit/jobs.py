"""The job: one fully resolved unit of work, the same flat JSON object everywhere.

A job is what a command's flags mean, what a preset fills, what a sidecar records under `parameters` and
what a batch line holds: the request fields of its command (stablekit.params) plus `command`, `model`,
`output` and `id`. Every way of making one goes through `job_from`, with one validation pass that names
the field and where it came from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

from .errors import UsageError
from .params import REQUESTS, check_fields
from .registry import ModelSpec

COMMANDS = tuple(REQUESTS)
JOB_KEYS = ("command", "model", "output", "id")
# Registry defaults that an input image overrides: the output takes the input's size unless told otherwise.
_SIZED_BY_INPUT = {"image": ("width", "height")}


@dataclass(frozen=True)
class Job:
    """A request of one command, resolved against its model record; `output` is the name or template."""

    command: str
    spec: ModelSpec
    request: Any
    output: str | None = None
    id: str | None = None

    @property
    def seed(self) -> int | None:
        return self.request.seed

    def with_request(self, **changes: Any) -> Job:
        return replace(self, request=replace(self.request, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON object: request fields plus command, model, output and id."""
        data = dataclasses.asdict(self.request)
        data.update(command=self.command, model=self.request.model, output=self.output, id=self.id)
        return data

    def digest(self) -> str:
        """A short hash of what decides the job's outputs (not its id or output name): the resume key."""
        data = {k: v for k, v in self.to_dict().items() if k not in ("id", "output")}
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def field_types(command: str) -> dict[str, Any]:
    """Every key a job of this command may hold, with its type."""
    import typing

    cls = REQUESTS[command]
    hints = typing.get_type_hints(cls)
    types = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    types.update(output=str | None, id=str | None, command=str)
    return types


def check_job_values(command: str, values: dict[str, Any], where: str) -> None:
    """Every key known, every value of its type, no NaN or infinity: one message naming key and place."""
    if command not in REQUESTS:
        raise UsageError(f"{where}: 'command' must be one of {', '.join(COMMANDS)}, got {command!r}")
    check_fields(field_types(command), command, values, where, UsageError)


def job_from(command: str, values: dict[str, Any], *, where: str = "options", preset: str | None = None,
             fallback_model: str | None = None, family: str | None = None, config: str | None = None) -> Job:
    """The one way to build a job: flags, a batch line or a sidecar's parameters, over a preset, over the
    model's registry defaults, over the request type's defaults.

    `values` uses the job keys (None means "not given"); `preset` is a name or .toml path; the model is
    `values['model']`, else the preset's, else `fallback_model`, else the command's default.
    """
    from .preset_files import load_preset
    from .registry import load_registry

    given = {k: v for k, v in values.items() if v is not None}
    check_job_values(command, given, where)
    given.pop("command", None)
    output, job_id = given.pop("output", None), given.pop("id", None)
    preset_values = load_preset(preset, command).values if preset else {}
    model = given.get("model") or preset_values.get("model") or fallback_model or REQUESTS[command].model
    spec = load_registry().resolve(model, command, family=family, config=config)
    skipped = _SIZED_BY_INPUT.get(command, ()) if given.get("image") else ()
    fields = {f.name for f in dataclasses.fields(REQUESTS[command])}
    merged = {k: v for k, v in spec.defaults.items() if k in fields and k not in skipped}
    merged.update(preset_values)
    merged.update(given)
    merged["model"] = model
    merged.setdefault("prompt", "")
    return Job(command, spec, REQUESTS[command](**merged), output=output, id=job_id)


def job_from_record(parameters: dict[str, Any], where: str) -> Job:
    """The job a sidecar (or embedded record) describes: its job keys, without the details it adds."""
    command = parameters.get("command")
    if command not in REQUESTS:
        raise UsageError(f"{where}: no stablekit job recorded (no known 'command')")
    keys = set(field_types(command))
    return job_from(command, {k: v for k, v in parameters.items() if k in keys}, where=where)


def with_seed(job: Job, note=None) -> Job:
    """The job with its seed decided: the given one, or one drawn now and said (so the run can be repeated)."""
    if job.seed is not None or not _draws(job):
        return job
    return job.with_request(seed=draw_seed(note))


def draw_seed(note=None) -> int:
    """The one place a seed is drawn; `note` says it, so the run can be repeated."""
    import secrets  # here: a run with --seed (a served call's start) never needs it

    seed = secrets.randbelow(2**32)
    if note is not None:
        note(f"seed {seed} (drawn; pass --seed {seed} to repeat)")
    return seed


def _draws(job: Job) -> bool:
    """Greedy text and a mesh from a given image draw nothing: no seed to decide."""
    if job.command == "text":
        return job.request.temperature > 0
    if job.command == "mesh":
        return not job.request.image
    return True


def output_count(job: Job) -> int:
    """How many outputs the job writes (what numbering and the batch's totals count)."""
    request = job.request
    return int(getattr(request, "num_images", None) or getattr(request, "num_waveforms_per_prompt", None) or 1)
