"""Loading weights the same way for real and tiny models: from_pretrained on the folder the hub gave us."""

from __future__ import annotations

from pathlib import Path

from .console import Progress
from .errors import StablekitError
from .hub import refetch_hint
from .registry import ModelSpec

_SD1_FAMILIES = ("sd15", "sd21")


def quiet_libraries() -> None:
    """Silence the libraries' own progress bars and notices; stablekit reports progress itself."""
    from .quiet import import_quietly

    import_quietly("transformers", "diffusers")


def _dtype_keyword() -> str:
    """diffusers >= 0.40 takes `dtype=`; older ones `torch_dtype=` (passing both raises)."""
    from importlib.metadata import version

    major, minor = (int(part) for part in version("diffusers").split(".")[:2])
    return "dtype" if (major, minor) >= (0, 40) else "torch_dtype"


def _has_variant(folder: Path, variant: str) -> bool:
    return any(folder.glob(f"*/*.{variant}.safetensors")) or any(folder.glob(f"*.{variant}.safetensors"))


def _local_variant(folder: Path, dtype) -> str | None:
    """The fp16 files of a local folder (a clone of a hub repository, or `save_pretrained(variant="fp16")`): a
    16-bit run reads them, half the bytes, as a catalog record's variant does; a float32 run reads the full
    files, unless some component has only fp16 ones (diffusers falls back to a component's full files where it
    lacks the variant, not the other way round)."""
    if not _has_variant(folder, "fp16"):
        return None
    if str(dtype) != "torch.float32":
        return "fp16"
    for part in (folder, *(child for child in folder.iterdir() if child.is_dir())):
        weights = [f.name for f in part.glob("*.safetensors")]
        if weights and all(".fp16." in name for name in weights):
            return "fp16"
    return None


def load_diffusers(spec: ModelSpec, folder: Path, dtype, progress: Progress | None = None, **components):
    """The pipeline (or single model) class named by the record, loaded from a local folder only.

    `components` replace or share modules (a VAE, another pipeline's text encoder) instead of loading them. A
    pipeline's components that the load would convert to `dtype` come from their kept converted copies where those
    exist, and are kept after the load where not (stablekit.weights_cache).
    """
    from . import weights_cache
    from .quiet import errors_unlogged

    progress = progress or Progress()
    cache_limit = weights_cache.budget()  # a malformed setting is said before any loading
    quiet_libraries()
    import diffusers

    cls = getattr(diffusers, spec.loader, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise StablekitError(f"{spec.id}: diffusers has no loader '{spec.loader}'",
                             hint="upgrade diffusers, or fix the loader in your catalog")
    kwargs = {_dtype_keyword(): dtype, "local_files_only": True}
    if spec.family in _SD1_FAMILIES and spec.loader.endswith("Pipeline"):
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    if not spec.checkpoint and spec.loader.endswith("Pipeline"):
        kwargs.update(saved_without(folder))
    kwargs.update(components)
    if spec.variant and not spec.checkpoint and _has_variant(folder, spec.variant):
        kwargs["variant"] = spec.variant
    elif spec.local_path and not spec.checkpoint and (variant := _local_variant(folder, dtype)):
        kwargs["variant"] = variant
    convertible, in_use = [], set()
    if cache_limit and not spec.checkpoint and spec.loader.endswith("Pipeline"):
        convertible = weights_cache.convertible(folder, str(dtype).removeprefix("torch."), kwargs.get("variant"),
                                                skip=set(kwargs))
        kept = weights_cache.load_kept(convertible, dtype, progress)
        kwargs.update(kept)
        in_use = {component.key for component in convertible if component.name in kept}
        convertible = [component for component in convertible if component.name not in kept]
    try:
        with errors_unlogged("diffusers", "transformers"):
            if spec.checkpoint:  # one .safetensors file in the original layout; configs from `folder`
                return cls.from_single_file(spec.checkpoint, config=str(folder), **kwargs)
            pipe = cls.from_pretrained(folder, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as err:
        source = spec.checkpoint or folder
        raise StablekitError(f"cannot load {spec.name} from {source}: {str(err).splitlines()[0]}",
                             hint=_load_hint(spec, str(err))) from err
    loaded = {component.name: getattr(pipe, component.name, None) for component in convertible}
    weights_cache.keep(loaded, convertible, spec.id, cache_limit, progress, in_use)
    return pipe


def saved_without(folder: Path) -> dict[str, None]:
    """The components a pipeline folder was saved without (`"text_encoder_3": [null, null]`: SD3 saved with its
    T5 dropped), as None: diffusers loads such a folder only when told so again."""
    from .layouts import json_object

    index = json_object(folder / "model_index.json")
    return {key: None for key, value in index.items() if not key.startswith("_") and value == [None, None]}


def _load_hint(spec: ModelSpec, message: str) -> str:
    if "trust_remote_code" in message or "custom" in message.lower():
        return "this model needs its repository's own code, which stablekit never runs; pick another model"
    if spec.checkpoint:
        return f"is it a {spec.family} checkpoint? --family and --config choose how it is read"
    if spec.local_path:
        return "the folder's files do not match its model_index.json / config.json; " + refetch_hint(spec)
    return "if a download was interrupted or a file is damaged, " + refetch_hint(spec)



def load_placed(plan, progress) -> tuple:
    """A one-pipeline engine's load: the files, the pipeline in the plan's dtype, placed as planned, quiet."""
    from . import hub
    from .devices import place, torch_dtype

    spec, device_plan = plan.spec, plan.device_plan
    folder = hub.ensure_local(spec)
    progress.stage(f"Loading {spec.id} ({device_plan.dtype} on {device_plan.device}, offload {device_plan.offload})")
    pipe = place(load_diffusers(spec, folder, torch_dtype(device_plan), progress), device_plan)
    pipe.set_progress_bar_config(disable=True)
    return pipe, folder
