"""Typed requests, one per command, with fields named like the diffusers / transformers call arguments.

A request is resolved from four layers, highest first: command-line flags, a preset, the model's
registry defaults, and the global defaults below.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from .errors import PresetError, UsageError


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    model: str = "sdxl"
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    num_inference_steps: int = 30
    guidance_scale: float = 7.0
    num_images: int = 1
    batch_size: int = 1
    seed: int | None = None
    device: str | None = None
    dtype: str | None = None
    offload: str | None = None
    vram: float | None = None


REQUESTS: dict[str, type] = {"image": ImageRequest}
_NOT_IN_PRESETS = {"prompt"}  # what a preset may not set: the per-run input


def settable_fields(command: str) -> dict[str, Any]:
    """Fields a preset (or a registry default) may set for this command, with their types."""
    cls = REQUESTS[command]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name not in _NOT_IN_PRESETS}


def _accepts(annotation: Any, value: Any) -> bool:
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_accepts(item, v) for v in value)
    options = typing.get_args(annotation) or (annotation,)
    for option in options:
        if typing.get_origin(option) is list and _accepts(option, value):
            return True
        if option is type(None) and value is None:
            return True
        if option is bool and isinstance(value, bool):
            return True
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option is str and isinstance(value, str):
            return True
    return False


def check_values(command: str, values: dict[str, Any], where: str, error=PresetError) -> None:
    """Every key known to the command's request, every value of the right type."""
    fields = settable_fields(command)
    for key, value in values.items():
        if key not in fields:
            raise error(f"{where}: unknown key '{key}' for `stablekit {command}`",
                        hint=f"known keys: {', '.join(sorted(fields))}")
        if not _accepts(fields[key], value):
            raise error(f"{where}: '{key}' should be {_type_name(fields[key])}, got {value!r}")


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is list:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    names = [_type_name(a) if typing.get_origin(a) else a.__name__
             for a in (typing.get_args(annotation) or (annotation,)) if a is not type(None)]
    return " or ".join(names)


def resolve(command: str, *, prompt: str, flags: dict[str, Any], preset: dict[str, Any],
            model_defaults: dict[str, Any]):
    """Merge the layers (flag > preset > model defaults > global defaults) into a request."""
    fields = settable_fields(command)
    values: dict[str, Any] = {}
    values.update({k: v for k, v in model_defaults.items() if k in fields})
    values.update(preset)
    values.update({k: v for k, v in flags.items() if v is not None})
    unknown = set(values) - set(fields)
    if unknown:
        raise UsageError(f"unknown option(s) for {command}: {', '.join(sorted(unknown))}")
    return REQUESTS[command](prompt=prompt, **values)
