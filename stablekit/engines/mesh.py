"""Image (or text, through an image model first) to a 3D mesh with TripoSR: vertex colours or a baked texture.

TripoSR runs from stablekit's own implementation (stablekit.models.triposr); the mesh grid's resolution and
the query chunk size come from the device plan, and every choice is printed with its reason by --dry-run.
After extraction: an optional face budget (--faces), UV texture (--texture) and turntable video (--turntable),
all in stablekit.models.triposr (finish, bake, decimate, turntable), which need only the mesh and the colour field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .. import __version__, devices, hub
from ..console import Progress
from ..devices import GIB, DevicePlan, Workload, torch_dtype
from ..errors import InputError, UsageError
from ..models.triposr import preprocess  # (the package's torch code is imported by load and run, not plan)
from ..models.triposr.decimate import MIN_FACES
from ..outputs import OutputOptions, check_template
from ..params import MeshRequest
from ..planning import Plan, overrides_of
from ..registry import ModelSpec
from ..sink import Output, Written
from ..writers import video as video_writer
from ..writers.mesh import COLORLESS, EXTENSIONS, TEXTURED, UP_AXES, orient, write_mesh, written_files

__all__ = ["EXTENSIONS", "MeshSession", "MeshSettings", "check_output", "load", "plan", "session_key", "settings",
           "validate", "workload"]

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
TURNTABLE_VIEWS_RANGE = (1, 720)
TEXTURE_RANGE = (64, 8192)  # --texture: texels per side of the baked texture
TURNTABLE_SIZE_RANGE = (32, 2048)
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
    if request.face_count is not None and request.face_count < MIN_FACES:
        raise UsageError(f"--faces {request.face_count}: must be at least {MIN_FACES} (a tetrahedron)")
    low, high = TEXTURE_RANGE
    if request.texture_size is not None and not low <= request.texture_size <= high:
        raise UsageError(f"--texture {request.texture_size}: must be between {low} and {high} texels (e.g. 1024)")
    for flag, number, (low, high) in (("--turntable-views", request.turntable_views, TURNTABLE_VIEWS_RANGE),
                                      ("--turntable-size", request.turntable_size, TURNTABLE_SIZE_RANGE)):
        if not low <= number <= high:
            raise UsageError(f"{flag} {number}: must be between {low} and {high}")
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


def output_extension(request: MeshRequest, output: str | None) -> str:
    suffix = Path(output).suffix.lower() if output else ""
    if request.output_format:
        wanted = f".{request.output_format}"
        if suffix and suffix != wanted:
            raise UsageError(f"--format {request.output_format} but --output ends in {suffix}")
        return wanted
    return suffix or ".glb"


def check_output(request: MeshRequest, output: str | None) -> None:
    """The output names: the mesh's format, --texture's need of GLB or OBJ, and --turntable's video name."""
    check_template(OutputOptions(output=output), EXTENSIONS)
    extension = output_extension(request, output)
    if request.texture_size is not None and extension not in TEXTURED:
        kept = "keeps vertex colours" if extension not in COLORLESS else "stores no colours"
        raise UsageError(f"--texture needs a {' or '.join(TEXTURED)} output: {extension[1:].upper()} {kept}",
                         hint="-o NAME.glb (texture inside) or -o NAME.obj (NAME.mtl and NAME-texture.png beside it)")
    if request.turntable is not None:
        suffix = Path(request.turntable).suffix.lower()
        if suffix not in video_writer.EXTENSIONS:
            raise UsageError(f"--turntable {request.turntable}: name a video, "
                             f"{', '.join('NAME' + e for e in video_writer.EXTENSIONS)}")
        try:
            check_template(OutputOptions(output=request.turntable), video_writer.EXTENSIONS)
        except UsageError as err:
            raise UsageError(err.message.replace("--output", f"--turntable {request.turntable}", 1), err.hint) from None


def plan(job, hardware) -> Plan:
    """Check the request and output names, read --image (or plan the image model's drawing of the prompt), and
    plan TripoSR: full precision unless --dtype says otherwise, with the mesh settings' reasons."""
    from . import image

    request, spec = job.request, job.spec
    validate(request, spec)
    check_output(request, job.output)
    source, stages = None, ()
    if request.image:
        source = open_image(request.image)
        if job.output is None:  # named after the image: TripoSR draws nothing, there is no seed to tell runs apart
            job = replace(job, output="{prompt}")
    else:
        template = job.output or "{prompt}-{seed}"
        keep_as = str(Path(template).with_suffix(".png")) if request.keep_image else None
        stages = (image.stage(job, request.prompt, hardware, role="the image", keep_as=keep_as),)
    work = workload(request)
    overrides = overrides_of(request)
    device_plan = devices.plan(spec, hardware, work, overrides)
    if request.dtype is None and device_plan.dtype != "float32":
        device_plan = devices.plan(spec, hardware, work, replace(overrides, dtype="float32"))
        device_plan = replace(device_plan, reasons=tuple(
            _FULL_PRECISION if r.startswith("dtype float32") else r for r in device_plan.reasons))
    device_plan = replace(device_plan, reasons=device_plan.reasons + settings(device_plan, request).reasons)
    return Plan(job, hardware, device_plan, work, spec, stages, source)


def session_key(plan: Plan) -> tuple:
    p = plan.device_plan
    return ("mesh", plan.spec.id, plan.spec.revision, p.device, p.dtype)


def load(plan: Plan, progress: Progress = Progress()) -> MeshSession:
    from ..models import triposr

    spec, device_plan = plan.spec, plan.device_plan
    folder = hub.ensure_local(spec)
    progress.stage(f"Loading {spec.id} ({device_plan.dtype} on {device_plan.device})")
    model = triposr.from_pretrained(folder, device_plan.device, torch_dtype(device_plan))
    return MeshSession(model, folder, progress)


class MeshSession:
    """A loaded TripoSR: one mesh per job (and its turntable video), from --image or the image stage's drawing."""

    def __init__(self, model, folder: Path, progress: Progress) -> None:
        self.model, self.folder, self.progress = model, folder, progress

    def close(self) -> None:
        self.model = None

    def run(self, plan: Plan, sink, inputs: dict | None = None) -> None:
        from ..models.triposr import turntable

        request, progress = plan.request, self.progress
        if request.image:
            if request.seed is not None:
                progress.note("--seed has no effect with --image: TripoSR draws no random numbers")
            source, name = plan.inputs, Path(request.image).stem
        else:
            source, name = preprocess.as_rgb_or_rgba((inputs or {})["image"][0]), request.prompt
        mesh, details = self._reconstruct(plan, source)
        extension = output_extension(request, plan.job.output)
        params = {**plan.job.to_dict(), **details, "format": extension[1:], "model": plan.spec.id}
        if plan.stages:
            params["image_parameters"] = plan.stages[0].job.to_dict()
        embedded = {k: v for k, v in params.items() if k not in ("chunk_size", "output", "id")}
        embedded.update(command="mesh", stablekit_version=__version__)
        if extension in COLORLESS:
            progress.note(f"{extension[1:].upper()} stores no colours: the vertex colours are left out")
        frames = self._turntable(mesh, request) if request.turntable else None
        seed = None if request.image else request.seed
        info = {"vertices": details["vertices"], "faces": details["faces"]}

        def write(path: Path, overwrite: bool) -> Written:
            written = write_mesh(orient(mesh, request.up), path, embedded if request.metadata else None,
                                 overwrite=overwrite)
            files = written_files(mesh, written)
            if len(files) == 1:
                return Written(written)
            return Written(written, extra=files[1:], info={"files": [str(f) for f in files[1:]]},
                           parameters={"companions": [f.name for f in files[1:]]})

        comment = json.dumps(embedded, default=str, sort_keys=True)

        def write_video(path: Path, overwrite: bool) -> Written:
            video = video_writer.write_video(frames, turntable.FPS, path, comment=comment if request.metadata else None,
                                             overwrite=overwrite)
            return Written(video.path, info={"width": video.width, "height": video.height})

        with sink.together():  # the mesh and its turntable: both in place, or neither
            result = sink.emit(plan.job, Output("mesh", extension, write, params, plan, self.folder, seed=seed,
                                                name=name, info=info))
            if frames is None:
                return
            movie = {**params, "mesh_output": Path(result["path"]).name, "fps": turntable.FPS}
            sink.emit(replace(plan.job, output=request.turntable),
                      Output("turntable", Path(request.turntable).suffix.lower(), write_video, movie, plan,
                             self.folder, seed=seed, name=name, info={"frames": len(frames), "fps": turntable.FPS}))

    def _turntable(self, mesh, request: MeshRequest):
        """The finished mesh (TripoSR's frame) from request.turntable_views cameras around it: uint8 frames."""
        from ..models.triposr import turntable

        size, views = request.turntable_size, request.turntable_views
        with self.progress.task(f"turntable: {views} views at {size}x{size}", total=views) as advance:
            return turntable.render_turntable(mesh, views, size, on_view=advance)

    def _reconstruct(self, plan: Plan, source: Image.Image) -> tuple[Any, dict[str, Any]]:
        """Image -> (the finished mesh in TripoSR's frame, what to record about how it was made)."""
        import torch

        from ..models import triposr
        from ..models.triposr.finish import color_field, finish_mesh

        request, device_plan, progress, model = plan.request, plan.device_plan, self.progress, self.model
        if request.remove_background and not preprocess.has_transparency(source):
            progress.stage(f"Removing the background (rembg {preprocess.REMBG_MODEL})")
        pixels, how = preprocess.prepare(source, remove_bg=request.remove_background,
                                         foreground_ratio=request.foreground_ratio)
        chosen = settings(device_plan, request)
        resolution, chunk = chosen.resolution, chosen.chunk_size
        with torch.inference_mode():
            progress.stage("Reconstructing the triplanes")
            dtype = torch_dtype(device_plan)
            images = preprocess.model_input(pixels, model.config.cond_image_size).to(device_plan.device, dtype)
            code = model(images)[0]
            with progress.task(f"density grid {resolution}^3", total=triposr.chunk_count(resolution, chunk)) as step:
                density = triposr.density_grid(model.query, code, resolution, chunk, step)
            progress.stage("Extracting the surface (marching cubes)")
            vertices, faces = triposr.marching_cubes(density, request.mc_threshold, model.config.renderer.radius)
            del density
            mesh = triposr.build_mesh(model.query, code, vertices, faces, chunk)
        extracted = {"faces": len(mesh.faces), "vertices": len(mesh.vertices)}
        mesh, finished = finish_mesh(mesh, color_field(model.query, code, chunk), face_count=request.face_count,
                                     texture_size=request.texture_size, stage=progress.stage)
        details = {"preprocessing": how, "mc_resolution": resolution, "chunk_size": chunk, **finished,
                   "vertices": len(mesh.vertices), "faces": len(mesh.faces)}
        what = f"{details['faces']} faces, {details['vertices']} vertices"
        if request.face_count is not None:
            what += f" (from {extracted['faces']} faces, {extracted['vertices']} vertices)"
        if request.texture_size is not None:
            what += f"; texture {request.texture_size}^2 in {finished['texture']['charts']} charts"
        progress.note(f"mesh: {what}; {'watertight' if finished['watertight'] else 'not watertight'}")
        return mesh, details
