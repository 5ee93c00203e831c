"""Image (or text, through an image model first) to a vertex-coloured 3D mesh with TripoSR.

TripoSR runs from stablekit's own implementation (stablekit.models.triposr); the mesh grid's resolution and
the query chunk size come from the device plan, and every choice is printed with its reason by --dry-run.
"""

from __future__ import annotations

import gc
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .. import __version__, hub, planning
from ..console import Progress
from ..devices import GIB, DevicePlan, Hardware, Workload, torch_dtype
from ..errors import InputError, UsageError
from ..models.triposr import preprocess
from ..outputs import OutputOptions, check_template, finish_before_interrupt, target_path
from ..params import MeshRequest
from ..planning import Prepared
from ..provenance import record
from ..registry import ModelSpec
from ..writers.mesh import COLORLESS, EXTENSIONS, UP_AXES, orient, write_mesh
from ..writers.sidecar import write_sidecar
from .image import ImageStage, plan_stage

__all__ = ["EXTENSIONS", "ImageStage", "MeshSettings", "check_output", "generate", "image_stage", "prepare",
           "settings", "validate", "workload"]

RESOLUTION = {"cuda": 256, "mps": 192, "cpu": 128}
_RESOLUTION_WHY = {
    "cuda": "the official default",
    "mps": "a step down from the official 256 for unified memory",
    "cpu": "a CPU needs minutes for 256^3 (8x the points) and TripoSR's 64x64 triplanes add little detail",
}
RESOLUTION_RANGE = (16, 512)
CPU_CHUNK = 8192  # measured fastest on CPUs: larger chunks fall out of cache
CHUNK_RANGE = (8192, 1 << 20)
_BYTES_PER_POINT = 4096  # a point's plane features and MLP activations in fp32, with room to spare
_FULL_PRECISION = ("dtype float32: TripoSR runs in full precision (the surface lies where exp(density) = 25); "
                   "--dtype bfloat16 or float16 to halve the weights")


def workload(request: MeshRequest) -> Workload:
    return Workload()  # one image, one forward pass: the memory profile is fixed


@dataclass(frozen=True)
class MeshSettings:
    """The grid and chunking of the density query, chosen from the device plan unless the request says."""

    resolution: int
    chunk_size: int
    reasons: tuple[str, ...]


def settings(plan: DevicePlan, request: MeshRequest) -> MeshSettings:
    """Pure: resolution 256 on a GPU, lower elsewhere; chunks sized to the memory left beside the model."""
    kind = plan.device.split(":")[0]
    if request.mc_resolution is not None:
        resolution = request.mc_resolution
        reasons = [f"mesh grid {resolution}^3: asked for (--resolution, a preset or the model's defaults)"]
    else:
        resolution = RESOLUTION[kind]
        reasons = [f"mesh grid {resolution}^3: {_RESOLUTION_WHY[kind]} on {kind} (--resolution to change)"]
    if request.chunk_size is not None:
        chunk = request.chunk_size
        reasons.append(f"density queries of {chunk or 'all'} points at a time: asked for with --chunk-size")
    elif kind == "cpu":
        chunk = CPU_CHUNK
        reasons.append(f"density queries of {chunk} points at a time: the fastest size on CPUs")
    else:
        spare = max(plan.budget_gib - plan.peak_gib, 0.0)
        per_point = _BYTES_PER_POINT * (1 if plan.dtype == "float32" else 0.5)
        fits = max(int(spare * GIB / per_point), 1)
        chunk = min(max(1 << (fits.bit_length() - 1), CHUNK_RANGE[0]), CHUNK_RANGE[1])
        reasons.append(f"density queries of {chunk} points at a time: sized to the {spare:.1f} GiB of "
                       f"{plan.memory_kind} left beside the model")
    return MeshSettings(resolution, chunk, tuple(reasons))


def prepare(spec: ModelSpec, request: MeshRequest, hardware: Hardware | None = None) -> Prepared:
    """The device plan for TripoSR: full precision unless --dtype says otherwise, plus the mesh settings' reasons."""
    overrides = planning.overrides_of(request)
    prepared = planning.prepare(spec, workload(request), overrides, hardware)
    if request.dtype is None and prepared.plan.dtype != "float32":
        prepared = planning.prepare(spec, workload(request), replace(overrides, dtype="float32"), prepared.hardware)
        reasons = tuple(_FULL_PRECISION if r.startswith("dtype float32") else r for r in prepared.plan.reasons)
        prepared = replace(prepared, plan=replace(prepared.plan, reasons=reasons))
    plan = prepared.plan
    return replace(prepared, plan=replace(plan, reasons=plan.reasons + settings(plan, request).reasons))


def open_image(path: str) -> Image.Image:
    """The input image, fully read (so a truncated file fails here, not halfway through)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise InputError(f"--image {path}: no such file")
    try:
        with Image.open(file) as image:
            image.load()
            return preprocess.as_rgb_or_rgba(image)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(f"--image {path}: not a readable image ({err})") from None


def validate(request: MeshRequest, spec: ModelSpec) -> None:
    """Reject what cannot work, before anything is loaded or drawn."""
    if "img2mesh" not in spec.tasks:
        raise UsageError(f"{spec.id} does not make meshes (it does: {', '.join(spec.tasks)})")
    has_prompt = bool(request.prompt.strip())
    if request.image and has_prompt:
        raise UsageError("give a prompt or --image, not both")
    if not request.image and not has_prompt:
        raise UsageError("missing the input: an image or a prompt",
                         hint='stablekit mesh --image chair.png, or stablekit mesh "a wooden chair, white background"')
    low, high = RESOLUTION_RANGE
    if request.mc_resolution is not None and not low <= request.mc_resolution <= high:
        raise UsageError(f"--resolution {request.mc_resolution}: must be between {low} and {high}")
    if request.chunk_size is not None and request.chunk_size < 0:
        raise UsageError(f"--chunk-size {request.chunk_size}: must be positive (0: all points at once)")
    if not request.mc_threshold > 0:
        raise UsageError(f"--threshold {request.mc_threshold}: must be positive (a density; TripoSR's is 25)")
    if not 0 < request.foreground_ratio <= 1:
        raise UsageError(f"--foreground-ratio {request.foreground_ratio}: must be in (0, 1]")
    if request.up not in UP_AXES:
        raise UsageError(f"--up {request.up}: use y or z")
    if request.output_format is not None and f".{request.output_format}" not in EXTENSIONS:
        raise UsageError(f"--format {request.output_format}: use {', '.join(e[1:] for e in EXTENSIONS)}")
    if request.keep_image and request.image:
        raise UsageError("--keep-image keeps the image drawn from a prompt; with --image there is none")
    opaque = True
    if request.image:
        opaque = not preprocess.has_transparency(open_image(request.image))
    if opaque and request.remove_background and not preprocess.background_remover_available():
        what = f"{request.image} has no transparent background" if request.image else \
            "the image drawn from the prompt needs its background removed"
        raise UsageError(f"{what}, and background removal (rembg) is not installed",
                         hint="pip install 'stablekit[rembg]' (its u2net model is downloaded on first use); or pass "
                              "--no-remove-bg for an image already centred on a plain gray background; or give "
                              "an RGBA image with a transparent background")


def output_extension(request: MeshRequest, output: OutputOptions) -> str:
    suffix = Path(output.output).suffix.lower() if output.output else ""
    if request.output_format:
        wanted = f".{request.output_format}"
        if suffix and suffix != wanted:
            raise UsageError(f"--format {request.output_format} but --output ends in {suffix}")
        return wanted
    return suffix or ".glb"


def check_output(request: MeshRequest, output: OutputOptions) -> None:
    check_template(output, EXTENSIONS)
    output_extension(request, output)


def image_stage(request: MeshRequest, hardware: Hardware | None = None) -> ImageStage | None:
    """For a prompt: resolve, check and plan the image model (nothing is loaded). None for --image."""
    if request.image:
        return None
    flags = {"seed": request.seed, "device": request.device, "dtype": request.dtype,
             "offload": request.offload, "vram": request.vram}
    return plan_stage(request.image_model, request.prompt, flags, hardware)


def _draw(stage: ImageStage, seed: int, target: Path, overwrite: bool, progress: Progress,
          on_output: Callable[[dict], None]) -> tuple[Path, dict]:
    """Render the prompt's image to `target` (kept) with the image engine, then free the pipeline's memory."""
    from . import image as image_engine

    image_request = replace(stage.request, seed=seed)
    progress.stage(f"Drawing the image with {stage.prepared.spec.id}")
    target_options = OutputOptions(output=str(target), overwrite=overwrite)
    [path] = image_engine.generate(stage.prepared, image_request, target_options, progress, on_output=on_output)
    _free_memory(stage.prepared.plan.device)
    return path, asdict(image_request)


def _free_memory(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def generate(prepared: Prepared, request: MeshRequest, output: OutputOptions, progress: Progress = Progress(),
             on_output: Callable[[dict], None] = lambda item: None, stage: ImageStage | None = None) -> list[Path]:
    """One mesh: draw the image first for a prompt, prepare it, reconstruct, extract, write with its sidecar."""
    spec, plan = prepared.spec, prepared.plan
    mesh_settings = settings(plan, request)
    extension = output_extension(request, output)
    if request.image:
        if request.seed is not None:
            progress.note("--seed has no effect with --image: TripoSR draws no random numbers")
        name, seed = Path(request.image).stem, 0
        template = output.output or "{prompt}"
    else:
        if stage is None:
            stage = image_stage(request, prepared.hardware)
        if request.seed is None:
            request = replace(request, seed=secrets.randbelow(2**32))
            progress.note(f"seed {request.seed} (drawn; pass --seed {request.seed} to repeat)")
        name, seed = request.prompt, request.seed
        template = output.output or "{prompt}-{seed}"
    path = target_path(replace(output, output=template), model=spec.id, seed=seed, index=0, count=1, prompt=name,
                       extension=extension)
    scratch = None if request.keep_image or request.image else Path(tempfile.mkdtemp(prefix="stablekit-mesh-"))
    try:
        image_params = None
        if request.image:
            source = open_image(request.image)
        else:
            def report_kept(item: dict) -> None:
                if not scratch:
                    on_output({**item, "kind": "image"})

            target = scratch / "image.png" if scratch else path.with_suffix(".png")
            drawn, image_params = _draw(stage, request.seed, target, output.overwrite, progress, report_kept)
            source = open_image(str(drawn))
            image_params["kept"] = None if scratch else str(drawn)
        mesh, details, folder = _reconstruct(prepared, request, mesh_settings, source, progress)
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    params = {**asdict(request), **details, "format": extension[1:], "model": spec.id,
              "stablekit_version": __version__}
    if image_params is not None:
        params["image_parameters"] = image_params
    embedded = {k: v for k, v in params.items() if k != "chunk_size"}  # chunking changes no value; it varies
    if extension in COLORLESS:
        progress.note(f"{extension[1:].upper()} stores no colours: the vertex colours are left out")
    with finish_before_interrupt():
        path = write_mesh(orient(mesh, request.up), path, embedded, overwrite=output.overwrite)
        sidecar = write_sidecar(path, record(spec=spec, model_path=str(folder), parameters=params,
                                             plan=plan, output=path.name))
        on_output({"path": str(path), "kind": "mesh", "model": spec.id, "vertices": details["vertices"],
                   "faces": details["faces"], "seed": request.seed if not request.image else None,
                   "sidecar": str(sidecar)})
    return [path]


def _reconstruct(prepared: Prepared, request: MeshRequest, mesh_settings: MeshSettings, source: Image.Image,
                 progress: Progress):
    """Image -> (welded, coloured mesh in TripoSR's frame, what to record about how it was made)."""
    import torch

    from ..models import triposr

    spec, plan = prepared.spec, prepared.plan
    if request.remove_background and not preprocess.has_transparency(source):
        progress.stage(f"Removing the background (rembg {preprocess.REMBG_MODEL})")
    pixels, how = preprocess.prepare(source, remove_bg=request.remove_background,
                                     foreground_ratio=request.foreground_ratio)
    folder = hub.ensure_local(spec)
    progress.stage(f"Loading {spec.id} ({plan.dtype} on {plan.device})")
    model = triposr.from_pretrained(folder, plan.device, torch_dtype(plan))
    resolution, chunk = mesh_settings.resolution, mesh_settings.chunk_size
    with torch.inference_mode():
        progress.stage("Reconstructing the triplanes")
        images = preprocess.model_input(pixels, model.config.cond_image_size).to(plan.device, torch_dtype(plan))
        code = model(images)[0]
        with progress.task(f"density grid {resolution}^3", total=triposr.chunk_count(resolution, chunk)) as advance:
            density = triposr.density_grid(model.query, code, resolution, chunk, advance)
        progress.stage("Extracting the surface (marching cubes)")
        vertices, faces = triposr.marching_cubes(density, request.mc_threshold, model.config.renderer.radius)
        del density
        mesh = triposr.build_mesh(model.query, code, vertices, faces, chunk)
    details = {"preprocessing": how, "mc_resolution": resolution, "chunk_size": chunk,
               "vertices": len(mesh.vertices), "faces": len(mesh.faces)}
    return mesh, details, folder
