"""The model registry: catalog records (built-in and the user's) and `--model` resolution."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .catalog_schema import (  # noqa: F401 - re-exported: the registry's vocabulary
    HUB_ID,
    LIBRARIES,
    LISTS_OF_STR,
    MEMORY_UNITS,
    MODALITIES,
    TASKS,
    check_id,
    check_record,
    is_hub_id,
)
from .errors import CatalogError, UnknownModelError, UsageError
from .paths import user_catalog_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

BUILTIN_CATALOG = Path(__file__).with_name("catalog.toml")


@dataclass(frozen=True)
class MemoryProfile:
    """What a model needs: weights per component and how activations grow with the workload."""

    params: dict[str, float]  # millions of parameters per pipeline component
    unit: str = "fixed"  # what activation_gib and decode_gib are counted per
    activation_gib: float = 0.0  # denoising activations per unit, 16-bit
    decode_gib: float = 0.0  # VAE decode peak per unit, 16-bit
    file_bits: int = 16  # the weights' dtype on disk (loading converts from it: see memory_plan.load_extra_gib)
    layers: int = 0  # text models: the config's layers, key/value heads and head size (the KV cache)
    kv_heads: int = 0
    head_dim: int = 0

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
    shared: tuple[str, ...] = ()  # components taken from the base model, never downloaded (the refiner)
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


def _spec_from_record(model_id: str, record: dict[str, Any], origin: str) -> ModelSpec:
    fields = dict(record)
    memory = MemoryProfile(**fields.pop("memory"))
    for key in LISTS_OF_STR:
        if key in fields:
            fields[key] = tuple(fields[key])
    return ModelSpec(id=model_id, memory=memory, origin=origin, **fields)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise CatalogError(f"{path}: not valid TOML ({err})") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not UTF-8 text", hint="save the catalog as UTF-8") from None
    except IsADirectoryError:
        raise CatalogError(f"{path}: a folder, not a catalog file", hint="the catalog is one TOML file") from None
    except OSError as err:
        raise CatalogError(f"{path}: cannot read ({err.strerror})") from None


# What a record that `extends` another keeps of it only when it names no repo of its own (the same weights).
_SOURCE_KEYS = ("tiny", "variant", "fallbacks", "files", "shared", "license", "license_url", "gated")


def parse_catalog(path: Path, origin: str, base: dict[str, dict[str, Any]] | None = None) -> dict[str, ModelSpec]:
    """Read and validate one catalog file; `base` holds records that `extends` may name."""
    data = _read_toml(path)
    unknown = set(data) - {"models"}
    if unknown:
        raise CatalogError(f"{path}: unknown top-level key '{sorted(unknown)[0]}'", hint="records go under [models.ID]")
    records = data.get("models", {})
    if not isinstance(records, dict):
        raise CatalogError(f"{path}: 'models' should be a table of records, not {type(records).__name__}",
                           hint="write each record as [models.ID]")
    specs: dict[str, ModelSpec] = {}
    for model_id, record in records.items():
        where = f"{path}: models.{model_id}"
        check_id(model_id, where)
        if not isinstance(record, dict):
            raise CatalogError(f"{where}: expected a table")
        merged = dict(record)
        parent = merged.pop("extends", None)
        if parent is not None:
            if not isinstance(parent, str) or not base or parent not in base:
                raise CatalogError(f"{where}.extends: no built-in model {parent!r}")
            # The record's own name (its id unless it says), never the parent's. Another repository: the parent's
            # source details and licence no longer apply.
            inherited = {k: v for k, v in base[parent].items() if k not in ("aliases", "name")}
            inherited["name"] = model_id
            if "repo" in record:
                for key in _SOURCE_KEYS:
                    inherited.pop(key, None)
                inherited["license"] = "see the model's card"
            merged = {**inherited, **merged}
        check_record(where, merged, built_in=origin == "built-in")
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
        configs to use (by default the family's own, see checkpoints.FAMILY_CONFIGS). Folders and hub repos
        are read from their own files (see layouts.py).
        """
        spec = self.find(name)
        path = Path(name).expanduser()
        if (family or config) and not (spec is None and path.is_file()):
            flags = " and ".join(f for f, v in (("--family", family), ("--config", config)) if v)
            raise UsageError(f"{flags} only apply to a single-file checkpoint (a .safetensors file); "
                             f"'{name}' is read from its own configs", hint=f"drop {flags}")
        if spec is None and path.is_file():
            spec = self._from_checkpoint(path, family, config)
        elif spec is None and path.exists():
            spec = self._from_local(path, modality)
        elif spec is None and is_hub_id(name) and not name.endswith(_FILE_SUFFIXES):
            spec = self._from_hub_id(name, modality)
        elif spec is None and _looks_like_path(name):
            raise UnknownModelError(f"--model {name}: no such file or folder",
                                    hint="check the path; catalog ids are in `stablekit models list`")
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
            configs_from=base.id, shared=(),
            license="see the checkpoint's source", license_url=None, gated=False, fallbacks=(),
            description=f"single-file {family} checkpoint (configs from {base.id})", origin="file",
        )

    def _from_layout(self, folder: Path, where: str, listing: list[str] | None = None,
                     counts: dict[str, float] | None = None) -> tuple[ModelSpec, str]:
        """The record a folder's own files make: the template record of its class, corrected by its configs."""
        from . import layouts

        layout = layouts.read(folder, where, listing)
        base = self.find(layout.template)
        if base is None:  # a user catalog cannot remove built-in ids, but be plain about it
            raise UnknownModelError(f"{where}: no catalog record for {layout.found}")
        memory = dataclasses.replace(base.memory, params=counts) if counts else base.memory
        multiple = int(base.limits.get("size_multiple", 8))
        spec = dataclasses.replace(
            base, memory=memory, loader=layout.loader, family=layout.family or base.family,
            tasks=layout.tasks or base.tasks, defaults=layouts.sized(base.defaults, layout, multiple),
            limits={**base.limits, **layout.limits}, files=layout.files, aliases=(), tiny=None, variant=None,
            fallbacks=(), shared=(), gated=False, license="see the model's card", license_url=None,
        )
        return spec, f"{layout.found}, planned like {base.id}"

    def _from_local(self, path: Path, modality: str | None) -> ModelSpec:
        from .checkpoints import parameter_counts

        path = path.resolve()
        if not path.is_dir():
            raise UnknownModelError(f"--model {path}: not a file or folder stablekit can read")
        counts = parameter_counts(path)  # the folder's own sizes, not the family's
        spec, found = self._from_layout(path, f"'{path}'", counts=counts)
        return dataclasses.replace(spec, id=str(path), name=path.name, repo=None, local_path=str(path),
                                   description=f"local folder: {found}", origin="local")

    def _from_hub_id(self, repo: str, modality: str | None) -> ModelSpec:
        """A hub repo that is in no catalog: its configs are fetched (or read from the cache) and read first."""
        from .hub_describe import describe_repo

        found = describe_repo(repo)
        spec, what = self._from_layout(found.folder, repo, found.listing, found.counts)
        return dataclasses.replace(spec, id=repo, name=repo, repo=repo, revision="main", local_path=None,
                                   description=f"hub repository: {what}", origin="hub")


# Names that are files, not hub ids, even when they have the ORG/NAME shape.
_FILE_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth", ".gguf", ".json", ".yaml", ".toml")


def _looks_like_path(name: str) -> bool:
    """Whether `--model NAME` was meant as a file or folder (it has a path's shape, or a weights suffix)."""
    return (name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name or name.count("/") >= 2
            or name.endswith(_FILE_SUFFIXES) or (name.count("/") == 1 and not is_hub_id(name)))


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
    if path.exists():
        specs.update(parse_catalog(path, "user", base=_builtin_records()))
    return Registry(specs)
