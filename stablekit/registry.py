"""The model registry: catalog records (built-in and the user's) and `--model` resolution."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import CatalogError, UnknownModelError
from .paths import user_catalog_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

MODALITIES = ("image", "video", "audio", "mesh", "text")
TASKS = ("txt2img", "img2img", "inpaint", "refine", "img2vid", "txt2audio", "img2mesh", "text", "chat", "vae")
LIBRARIES = ("diffusers", "transformers", "stablekit")
MEMORY_UNITS = ("megapixels", "megapixel_frames", "seconds", "kilotokens", "fixed")
BUILTIN_CATALOG = Path(__file__).with_name("catalog.toml")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class MemoryProfile:
    """What a model needs: weights per component and how activations grow with the workload."""

    params: dict[str, float]  # millions of parameters per pipeline component
    unit: str = "fixed"  # what activation_gib and decode_gib are counted per
    activation_gib: float = 0.0  # denoising activations per unit, 16-bit
    decode_gib: float = 0.0  # VAE decode peak per unit, 16-bit

    @property
    def total_params(self) -> float:
        return sum(self.params.values())


@dataclass(frozen=True)
class ModelSpec:
    """One model: where it comes from, how it loads, its defaults and its memory needs."""

    id: str
    name: str
    modality: str
    family: str
    tasks: tuple[str, ...]
    library: str
    loader: str
    memory: MemoryProfile
    aliases: tuple[str, ...] = ()
    repo: str | None = None
    revision: str = "main"
    variant: str | None = None
    fallbacks: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    tiny: str | None = None
    local_path: str | None = None
    checkpoint: str | None = None  # a single-file checkpoint, loaded with the configs of record `configs_from`
    configs_from: str | None = None
    gated: bool = False
    license: str = "unknown"
    license_url: str | None = None
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    origin: str = "built-in"  # built-in | user | hub | local

    @property
    def source(self) -> str:
        """Where the weights come from, as a person would write it."""
        if self.checkpoint:
            return f"{self.checkpoint} (configs of {self.configs_from})"
        if self.tiny:
            return f"built locally (stablekit.testing.tiny: {self.tiny})"
        if self.local_path:
            return self.local_path
        return f"{self.repo}@{self.revision}" if self.revision != "main" else str(self.repo)

    @property
    def page_url(self) -> str | None:
        return f"https://huggingface.co/{self.repo}" if self.repo else None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["memory"]["total_params_millions"] = round(self.memory.total_params, 1)
        data["license_url"] = self.license_url or self.page_url
        data["source"] = self.source
        return data


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
    "tiny": ((str,), False),
    "gated": ((bool,), False),
    "license": ((str,), False),
    "license_url": ((str,), False),
    "description": ((str,), False),
    "defaults": ((dict,), False),
    "limits": ((dict,), False),
}
_MEMORY_SCHEMA: dict[str, tuple[type, ...]] = {
    "params": (dict,),
    "unit": (str,),
    "activation_gib": (int, float),
    "decode_gib": (int, float),
}
_CHOICES = {"modality": MODALITIES, "library": LIBRARIES}


def _check_record(where: str, record: dict[str, Any]) -> None:
    """Raise CatalogError naming the file and key of the first thing wrong with a merged record."""
    for key, value in record.items():
        if key not in _SCHEMA:
            raise CatalogError(f"{where}.{key}: unknown key", hint=f"known keys: {', '.join(sorted(_SCHEMA))}")
        types, _ = _SCHEMA[key]
        if not isinstance(value, types) or (types == (str,) and not value):
            raise CatalogError(f"{where}.{key}: expected {types[0].__name__}, got {value!r}")
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
    for key, value in record["memory"].items():
        if key not in _MEMORY_SCHEMA:
            raise CatalogError(f"{where}.memory.{key}: unknown key")
        if not isinstance(value, _MEMORY_SCHEMA[key]):
            raise CatalogError(f"{where}.memory.{key}: wrong type {type(value).__name__}")
    params = record["memory"].get("params")
    if not params or not all(isinstance(v, (int, float)) and v >= 0 for v in params.values()):
        raise CatalogError(f"{where}.memory.params: a table of component = millions of parameters")
    if record["memory"].get("unit", "fixed") not in MEMORY_UNITS:
        raise CatalogError(f"{where}.memory.unit: one of {', '.join(MEMORY_UNITS)}")


def _spec_from_record(model_id: str, record: dict[str, Any], origin: str) -> ModelSpec:
    fields = dict(record)
    memory = MemoryProfile(**fields.pop("memory"))
    for key in ("tasks", "aliases", "fallbacks", "files"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return ModelSpec(id=model_id, memory=memory, origin=origin, **fields)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise CatalogError(f"{path}: not valid TOML ({err})") from None
    except OSError as err:
        raise CatalogError(f"{path}: cannot read ({err.strerror})") from None


def parse_catalog(path: Path, origin: str, base: dict[str, dict[str, Any]] | None = None) -> dict[str, ModelSpec]:
    """Read and validate one catalog file; `base` holds records that `extends` may name."""
    data = _read_toml(path)
    unknown = set(data) - {"models"}
    if unknown:
        raise CatalogError(f"{path}: unknown top-level key '{sorted(unknown)[0]}'", hint="records go under [models.ID]")
    records = data.get("models", {})
    specs: dict[str, ModelSpec] = {}
    for model_id, record in records.items():
        where = f"{path}: models.{model_id}"
        if not isinstance(record, dict):
            raise CatalogError(f"{where}: expected a table")
        merged = dict(record)
        parent = merged.pop("extends", None)
        if parent is not None:
            if not base or parent not in base:
                raise CatalogError(f"{where}.extends: no built-in model {parent!r}")
            inherited = dict(base[parent], aliases=[])
            if "repo" in record:  # another repository: the parent's source details no longer apply
                for key in ("tiny", "variant", "fallbacks", "files"):
                    inherited.pop(key, None)
            merged = {**inherited, **merged}
        _check_record(where, merged)
        specs[model_id] = _spec_from_record(model_id, merged, origin)
    return specs


class Registry:
    """All known models (built-in, then the user's), looked up by id or alias."""

    def __init__(self, specs: dict[str, ModelSpec]) -> None:
        self._specs = specs
        self._names: dict[str, str] = {}
        for spec in specs.values():
            for name in (spec.id, *spec.aliases):
                self._names.setdefault(name.lower(), spec.id)

    def __iter__(self):
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def ids(self, modality: str | None = None, task: str | None = None) -> list[str]:
        return [spec.id for spec in self if modality in (None, spec.modality) and task in (None, *spec.tasks)]

    def find(self, name: str) -> ModelSpec | None:
        model_id = self._names.get(name.lower())
        return self._specs[model_id] if model_id else None

    def get(self, name: str) -> ModelSpec:
        """A catalog record by id or alias, else UnknownModelError with the nearest names."""
        spec = self.find(name)
        if spec is None:
            raise UnknownModelError(f"unknown model '{name}'{_did_you_mean(name, list(self._names))}",
                                    hint="see `stablekit models list`")
        return spec

    def resolve(self, name: str, modality: str | None = None, *, family: str | None = None,
                config: str | None = None) -> ModelSpec:
        """What `--model` means: a catalog id or alias, a local folder or checkpoint file, or a hub repo id.

        `family` and `config` apply to single-file checkpoints: the architecture, and the record whose
        configs to use (by default the family's own, see checkpoints.FAMILY_CONFIGS).
        """
        spec = self.find(name)
        path = Path(name).expanduser()
        if spec is None and path.is_file():
            spec = self._from_checkpoint(path, family, config)
        elif spec is None and path.exists():
            spec = self._from_local(path, modality)
        if spec is None and HUB_ID.match(name):
            spec = self._from_hub_id(name, modality)
        if spec is None:
            self.get(name)  # raises with "did you mean"
        if modality and spec.modality != modality:
            generators = [s.id for s in self if s.modality == modality and "vae" not in s.tasks]
            raise UnknownModelError(
                f"'{name}' is a {spec.modality} model, not for {modality}",
                hint=f"{modality} models: {', '.join(generators) or 'none'}",
            )
        return spec

    def template(self, *, loader: str | None = None, modality: str | None = None) -> ModelSpec | None:
        """The first real (not tiny) record with this loader or modality: defaults for unknown models."""
        for spec in self:
            if spec.tiny or "vae" in spec.tasks:
                continue
            if (loader and spec.loader == loader) or (not loader and spec.modality == modality):
                return spec
        return None

    def _from_checkpoint(self, path: Path, family: str | None, config: str | None) -> ModelSpec:
        from .checkpoints import FAMILY_CONFIGS, detect_family

        if path.suffix != ".safetensors":
            raise UnknownModelError(f"'{path}': only .safetensors checkpoints are loaded (pickles can run code)",
                                    hint="convert it to safetensors, or pass a model folder")
        found = detect_family(path)
        if family and found and family != found:
            raise UnknownModelError(f"'{path.name}' looks like {found}, not {family}", hint="drop --family")
        family = family or found
        if family is None:
            raise UnknownModelError(f"cannot tell which family '{path.name}' belongs to",
                                    hint=f"pass --family ({', '.join(FAMILY_CONFIGS)})")
        if family not in FAMILY_CONFIGS:
            raise UnknownModelError(f"--family {family}: unknown", hint=f"use one of {', '.join(FAMILY_CONFIGS)}")
        base = self.get(config or FAMILY_CONFIGS[family])
        if base.family != family or not base.loader.endswith("Pipeline"):
            raise UnknownModelError(f"--config {base.id}: a {base.family} model, the checkpoint is {family}")
        return dataclasses.replace(
            base, id=str(path.resolve()), name=path.name, aliases=(), checkpoint=str(path.resolve()),
            configs_from=base.id,
            license="see the checkpoint's source", license_url=None, gated=False, fallbacks=(),
            description=f"single-file {family} checkpoint (configs from {base.id})", origin="file",
        )

    def _from_local(self, path: Path, modality: str | None) -> ModelSpec:
        path = path.resolve()
        loader = _local_loader(path)
        if loader is None:
            raise UnknownModelError(
                f"'{path}' is not a model folder (no model_index.json, config.json or config.yaml)",
            )
        base = self.template(loader=loader) or self.template(modality=modality)
        if base is None:
            raise UnknownModelError(f"'{path}': no catalog family uses the loader {loader}")
        from .checkpoints import parameter_counts

        counts = parameter_counts(path)  # the folder's own sizes, not the family's
        memory = dataclasses.replace(base.memory, params=counts) if counts else base.memory
        return dataclasses.replace(
            base, memory=memory, id=str(path), name=path.name, aliases=(), repo=None, tiny=None, variant=None,
            fallbacks=(), local_path=str(path), gated=False, license="see the model's card", license_url=None,
            description=f"local folder ({loader})", origin="local", loader=loader,
        )

    def _from_hub_id(self, repo: str, modality: str | None) -> ModelSpec | None:
        base = self.template(modality=modality or "image")
        if base is None:
            return None
        return dataclasses.replace(
            base, id=repo, name=repo, aliases=(), repo=repo, revision="main", tiny=None, variant=None,
            fallbacks=(), files=(), gated=False, license="see the model's card", license_url=None,
            description=f"hub repository, assumed to be like {base.id} until its files are on disk",
            origin="hub",
        )


def _local_loader(path: Path) -> str | None:
    """The loader a local folder declares: diffusers' model_index.json, transformers' config.json, TripoSR's yaml."""
    index = path / "model_index.json"
    if index.is_file():
        try:
            return json.loads(index.read_text())["_class_name"]
        except (ValueError, KeyError):
            return None
    config = path / "config.json"
    if config.is_file():
        try:
            architectures = json.loads(config.read_text()).get("architectures") or []
        except ValueError:
            return None
        return "AutoModelForCausalLM" if any(a.endswith("ForCausalLM") for a in architectures) else None
    if (path / "config.yaml").is_file():
        return "TripoSR"
    return None


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


@lru_cache(maxsize=1)
def _builtin_records() -> dict[str, dict[str, Any]]:
    return _read_toml(BUILTIN_CATALOG).get("models", {})


def load_registry(user_catalog: Path | None = None) -> Registry:
    """The built-in catalog with the user's records merged over it (a user id replaces a built-in one)."""
    specs = parse_catalog(BUILTIN_CATALOG, "built-in")
    path = user_catalog or user_catalog_path()
    if path.is_file():
        specs.update(parse_catalog(path, "user", base=_builtin_records()))
    return Registry(specs)
