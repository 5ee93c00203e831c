"""`stablekit doctor`: what this machine has, which libraries and tools, whether the hub answers, and how a
model would be placed."""

from __future__ import annotations

import typer

from .options import JsonOpt, ModelOpt, VramOpt


def doctor(
    ctx: typer.Context,
    model: ModelOpt = None,
    vram: VramOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Print hardware, library versions, folders and (with --model) the device plan."""
    from stablekit import devices, planning, weights_cache
    from stablekit.hub import offline
    from stablekit.paths import hf_hub_cache, stablekit_home
    from stablekit.provenance import versions
    from stablekit.registry import load_registry

    hardware = devices.probe()
    report = {
        "hardware": hardware.to_dict(),
        "versions": versions(),
        "folders": {"stablekit_home": str(stablekit_home()), "hf_hub_cache": str(hf_hub_cache())},
        "hub": {"offline": offline(), "logged_in": _has_token(), **_hub_reachable(offline())},
        "tools": {"ffmpeg": _ffmpeg(), "rembg": _rembg()},
        "weights_cache": weights_cache.summary(),
    }
    if model:
        from stablekit.jobs import job_from

        spec = load_registry().resolve(model)
        job = job_from(spec.modality, {"model": model, "vram": vram})
        report["plan"] = planning.describe(planning.plan_device(job, devices.default_workload(spec), hardware))
    console = ctx.obj
    if json_output:
        console.result(report)
        return
    _print_report(console, report, hardware)


def _print_report(console, report: dict, hw) -> None:
    """The report as aligned lines (scripts use --json)."""
    console.result(f"hardware    {hw.accelerator}: {hw.name}")
    if hw.accelerator != "cpu":
        cc = f", compute capability {'.'.join(map(str, hw.compute_capability))}" if hw.compute_capability else ""
        console.result(f"            {hw.memory_total_gib:.1f} GiB device memory, {hw.memory_free_gib:.1f} free{cc}")
    console.result(f"            {hw.ram_total_gib:.1f} GiB RAM, {hw.ram_available_gib:.1f} available")
    console.result("versions    " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    console.result(f"home        {report['folders']['stablekit_home']}")
    console.result(f"hub cache   {report['folders']['hf_hub_cache']}"
                   + ("  (offline)" if report["hub"]["offline"] else "")
                   + ("  (logged in)" if report["hub"]["logged_in"] else "  (not logged in)"))
    console.result(f"hub         {report['hub']['endpoint']}: {report['hub']['detail']}")
    console.result(f"converted   {_weights_cache_line(report['weights_cache'])}")
    ffmpeg, rembg = report["tools"]["ffmpeg"], report["tools"]["rembg"]
    console.result(f"ffmpeg      {ffmpeg['detail']}")
    console.result(f"rembg       {rembg['detail']}")
    if "plan" in report:
        console.result("")
        console.show_plan(report["plan"], False)


def _weights_cache_line(cache: dict) -> str:
    gib = 1024**3
    if cache["problem"]:
        return f"{cache['problem']} (fix it or unset it)"
    if not cache["limit_bytes"]:
        return f"off (STABLEKIT_WEIGHTS_CACHE); {cache['copies']} kept copies in {cache['folder']}"
    return (f"{cache['copies']} kept copies of weights, {cache['used_bytes'] / gib:.1f} of "
            f"{cache['limit_bytes'] / gib:.1f} GiB, in {cache['folder']}")


_HUB_TIMEOUT_S = 3.0


def _hub_reachable(is_offline: bool) -> dict:
    """One bounded request to the hub endpoint (HF_ENDPOINT or huggingface.co); none at all when offline."""
    import os
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    if is_offline:
        return {"endpoint": endpoint, "reachable": None,
                "detail": "not checked: HF_HUB_OFFLINE is set (only downloaded models can be used)"}
    request = urllib.request.Request(f"{endpoint}/api/models?limit=1", method="HEAD",
                                     headers={"User-Agent": "stablekit-doctor"})
    try:
        with urllib.request.urlopen(request, timeout=_HUB_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as err:  # an answer, even an error status, means the hub is reachable
        status = err.code
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return {"endpoint": endpoint, "reachable": False,
                "detail": f"not reachable ({reason}); downloads will fail, downloaded models still work"}
    return {"endpoint": endpoint, "reachable": True, "detail": f"reachable (HTTP {status})"}


def _ffmpeg() -> dict:
    """The ffmpeg that MP4 video is encoded with (imageio-ffmpeg's own, or IMAGEIO_FFMPEG_EXE)."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        version = imageio_ffmpeg.get_ffmpeg_version()
    except (ImportError, RuntimeError, OSError) as err:
        return {"available": False, "path": None, "version": None,
                "detail": f"not available ({err}): `video` can write .gif, .webp and frame folders, not .mp4"}
    return {"available": True, "path": exe, "version": version, "detail": f"{version} ({exe})"}


def _rembg() -> dict:
    """Whether background removal for `mesh` works: rembg with an onnxruntime, found without importing them
    (rembg exits the process when the runtime is missing), and whether its u2net model is downloaded yet."""
    import os
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec
    from pathlib import Path

    missing = [name for name in ("rembg", "onnxruntime") if find_spec(name) is None]
    if missing:
        return {"available": False, "version": None,
                "detail": f"not available ({' and '.join(missing)} missing): `mesh` needs an image with a "
                          "transparent background or --no-remove-bg (pip install -e '.[rembg]' adds it)"}
    try:
        found = version("rembg")
    except PackageNotFoundError:
        found = "unknown version"
    model = Path(os.environ.get("U2NET_HOME", Path.home() / ".u2net")) / "u2net.onnx"
    weights = "u2net downloaded" if model.is_file() else "u2net is downloaded on first use"
    return {"available": True, "version": found, "detail": f"{found} ({weights})"}


def _has_token() -> bool:
    """Whether a hub token is configured; the token itself is never read into output."""
    from huggingface_hub import get_token

    return get_token() is not None
