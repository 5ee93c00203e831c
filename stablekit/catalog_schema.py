"""The catalog schema: what a record (built-in or the user's) may hold, checked key by key with the file named.

Defaults are checked against the same request types as presets (params.check_values); ids and repos are names,
never paths; NaN and infinity are refused everywhere.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import CatalogError

MODALITIES = ("image", "video", "audio", "mesh", "text")
TASKS = ("txt2img", "img2img", "inpaint", "refine", "img2vid", "txt2audio", "img2mesh", "text", "chat", "vae")
LIBRARIES = ("diffusers", "transformers", "stablekit")
MEMORY_UNITS = ("megapixels", "megapixel_frames", "seconds", "kilotokens", "fixed")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9_][\w.-]*$")



# key -> (accepted types, required). `extends` copies another record first (user catalogs).
_SCHEMA: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), True),
    "modality": ((str,), True),
    "family": ((str,), True),
    "tasks": ((list,), True),
    "library": ((str,), True),
    "loader": ((str,), True),
    "memory": ((dict,), True),
    "aliases": ((list,), False),
    "repo": ((str,), False),
    "revision": ((str,), False),
    "variant": ((str,), False),
    "fallbacks": ((list,), False),
    "files": ((list,), False),
    "shared": ((list,), False),
    "tiny": ((str,), False),
    "gated": ((bool,), False),
    "license": ((str,), False),
    "license_url": ((str,), False),
    "description": ((str,), False),
    "defaults": ((dict,), False),
    "limits": ((dict,), False),
}
LISTS_OF_STR = ("tasks", "aliases", "fallbacks", "files", "shared")
_MEMORY_SCHEMA: dict[str, tuple[type, ...]] = {
    "params": (dict,),
    "unit": (str,),
    "activation_gib": (int, float),
    "decode_gib": (int, float),
    "file_bits": (int,),
    "layers": (int,),
    "kv_heads": (int,),
    "head_dim": (int,),
}
# limits: key -> type (all positive numbers).
_LIMITS: dict[str, type] = {"size_multiple": int, "max_audio_length_in_s": float, "context_length": int,
                            "max_frames": int, "min_megapixels": float, "max_megapixels": float}
# Defaults passed to the pipeline call rather than through the request (see engines/image.py).
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_PIPELINE_DEFAULTS: dict[str, Any] = {
    "max_sequence_length": lambda v: _is_int(v) and v > 0,
    "skip_guidance_layers": lambda v: isinstance(v, list) and all(_is_int(i) and i >= 0 for i in v),
    "denoising_start": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1,
}
_CHOICES = {"modality": MODALITIES, "library": LIBRARIES}
# An id is a name: word characters, dots, dashes, pluses; '/' only between such names (hub-style ids).
_ID_PART = re.compile(r"^[A-Za-z0-9_][\w.+-]*$")
_REVISION = re.compile(r"^[\w.-]+(/[\w.-]+)*$")
_VARIANT = re.compile(r"^[\w-]+$")


def is_hub_id(name: str) -> bool:
    """ORG/NAME as the hub spells repo ids (no '..', no third segment)."""
    return bool(HUB_ID.match(name)) and ".." not in name


def check_id(model_id: str, where: str) -> None:
    """A model id becomes a folder name under STABLEKIT_HOME: it may never be a path that leaves it."""
    parts = model_id.split("/")
    if not model_id or len(model_id) > 200 or not all(_ID_PART.match(p) and p not in (".", "..") for p in parts):
        raise CatalogError(f"{where}: the id {model_id!r} is not a plain name",
                           hint="ids are letters, digits, '.', '_', '-', '+' (and '/' between two such names); "
                                "no '..', no absolute paths")


def _finite(where: str, value: Any) -> None:
    """NaN and infinity are never a setting (TOML allows them: `nan`, `inf`)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CatalogError(f"{where}: {value!r} is not a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            _finite(f"{where}.{key}", item)
    elif isinstance(value, list):
        for item in value:
            _finite(where, item)


def _check_defaults(where: str, modality: str, defaults: dict[str, Any]) -> None:
    """Defaults are request fields of the modality's command (the same schema as presets), or pipeline extras."""
    from .params import REQUESTS, check_values

    extras = {k: v for k, v in defaults.items() if k in _PIPELINE_DEFAULTS}
    for key, value in extras.items():
        if not _PIPELINE_DEFAULTS[key](value):
            raise CatalogError(f"{where}.defaults: '{key}' has the wrong type or range: {value!r}")
    rest = {k: v for k, v in defaults.items() if k not in extras}
    if modality in REQUESTS:
        check_values(modality, rest, f"{where}.defaults", error=CatalogError)


def _check_limits(where: str, limits: dict[str, Any]) -> None:
    for key, value in limits.items():
        if key not in _LIMITS:
            raise CatalogError(f"{where}.limits.{key}: unknown key", hint=f"known limits: {', '.join(_LIMITS)}")
        wanted = _LIMITS[key]
        ok = isinstance(value, (int, float)) if wanted is float else isinstance(value, int)
        if isinstance(value, bool) or not ok or value <= 0:
            raise CatalogError(f"{where}.limits.{key}: expected a positive {wanted.__name__}, got {value!r}")


def _check_sources(where: str, record: dict[str, Any], built_in: bool) -> None:
    repos = ([record["repo"]] if "repo" in record else []) + list(record.get("fallbacks", []))
    for repo in repos:
        if not is_hub_id(repo):
            raise CatalogError(f"{where}: {repo!r} is not a hub repo id", hint="write it as ORG/NAME")
    if "revision" in record and (not _REVISION.match(record["revision"]) or ".." in record["revision"]):
        raise CatalogError(f"{where}.revision: {record['revision']!r} is not a branch, tag or commit")
    if "variant" in record and not _VARIANT.match(record["variant"]):
        raise CatalogError(f"{where}.variant: {record['variant']!r} is not a variant name (such as fp16)")
    if "tiny" in record and not built_in:  # the built-in kinds: tests/unit/test_catalog_start.py
        from .testing.tiny import TINY_KINDS

        if record["tiny"] not in TINY_KINDS:
            raise CatalogError(f"{where}.tiny: unknown kind {record['tiny']!r}", hint=f"one of {', '.join(TINY_KINDS)}")


def check_record(where: str, record: dict[str, Any], *, built_in: bool = False) -> None:
    """Raise CatalogError naming the file and key of the first thing wrong with a merged record. A `built_in`
    record's tiny kind is left to the tests: importing the tiny builders to check it would slow every start."""
    for key, value in record.items():
        if key not in _SCHEMA:
            raise CatalogError(f"{where}.{key}: unknown key", hint=f"known keys: {', '.join(sorted(_SCHEMA))}")
        types, _ = _SCHEMA[key]
        if not isinstance(value, types) or (types == (str,) and not value):
            raise CatalogError(f"{where}.{key}: expected {types[0].__name__}, got {value!r}")
        if key in LISTS_OF_STR and not all(isinstance(item, str) and item for item in value):
            raise CatalogError(f"{where}.{key}: expected a list of names, got {value!r}")
    _finite(where, record)
    for key, (_, required) in _SCHEMA.items():
        if required and key not in record:
            raise CatalogError(f"{where}: missing required key '{key}'")
    for key, choices in _CHOICES.items():
        if record[key] not in choices:
            raise CatalogError(f"{where}.{key}: {record[key]!r} is not one of {', '.join(choices)}")
    for task in record["tasks"]:
        if task not in TASKS:
            raise CatalogError(f"{where}.tasks: unknown task {task!r}", hint=f"tasks: {', '.join(TASKS)}")
    if not (record.get("repo") or record.get("tiny")):
        raise CatalogError(f"{where}: needs 'repo' (a hub repository id)")
    _check_sources(where, record, built_in)
    for key, value in record["memory"].items():
        if key not in _MEMORY_SCHEMA:
            raise CatalogError(f"{where}.memory.{key}: unknown key", hint=f"known keys: {', '.join(_MEMORY_SCHEMA)}")
        if not isinstance(value, _MEMORY_SCHEMA[key]) or isinstance(value, bool):
            raise CatalogError(f"{where}.memory.{key}: wrong type {type(value).__name__}")
        if isinstance(value, (int, float)) and value < 0:
            raise CatalogError(f"{where}.memory.{key}: must not be negative")
    params = record["memory"].get("params")
    if not params or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
                             for v in params.values()):
        raise CatalogError(f"{where}.memory.params: a table of component = millions of parameters")
    if record["memory"].get("unit", "fixed") not in MEMORY_UNITS:
        raise CatalogError(f"{where}.memory.unit: one of {', '.join(MEMORY_UNITS)}")
    _check_defaults(where, record["modality"], record.get("defaults", {}))
    _check_limits(where, record.get("limits", {}))
