"""devices.place() executed for real on the CPU with tiny models: every offload branch (diffusers accepts the CPU
as the onload device), VAE tiling and slicing, forward chunking, the SDXL refiner sharing modules under offload
hooks, and the fp32 re-decode after hooks. Outputs are compared with plain placement at the same seed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from stablekit import hub
from stablekit.devices import DevicePlan, Hardware, place
from stablekit.registry import load_registry

CPU = Hardware("cpu", "test cpu", 16, 14, 16, 14)


def device_plan(offload="none", dtype="float32", **switches) -> DevicePlan:
    values = dict(device="cpu", dtype=dtype, offload=offload, vae_tiling=False, vae_slicing=False,
                  attention_slicing=offload == "sequential", forward_chunking=False, decode_chunk_size=None,
                  peak_gib=1.0, budget_gib=10.0, weights_gib=0.1, memory_kind="RAM")
    return DevicePlan(**{**values, **switches})


def tiny_pipe(model_id: str, dtype: str = "float32"):
    import torch

    from stablekit.loading import load_diffusers

    spec = load_registry().get(model_id)
    return load_diffusers(spec, hub.ensure_local(spec), getattr(torch, dtype))


def render(pipe, batch: int = 1, **call):
    import torch

    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator("cpu").manual_seed(7 + i) for i in range(batch)]
    with torch.inference_mode():
        return pipe(["a lighthouse"] * batch, num_inference_steps=2, guidance_scale=5.0, height=64, width=64,
                    generator=generators, output_type="np", **call).images


@pytest.fixture(scope="module")
def plain_image():
    return render(place(tiny_pipe("tiny-sd"), device_plan()))


@pytest.mark.parametrize("offload", ["model", "group", "sequential"])
def test_every_offload_branch_runs_and_matches_plain_placement(offload, plain_image):
    pipe = place(tiny_pipe("tiny-sd"), device_plan(offload))
    hooked = [name for name in ("unet", "text_encoder", "vae")
              if any(getattr(m, "_hf_hook", None) is not None or getattr(m, "_diffusers_hook", None) is not None
                     for m in getattr(pipe, name).modules())]
    assert hooked == ["unet", "text_encoder", "vae"], f"{offload} offload left modules without hooks"
    if offload == "sequential":  # accelerate (1.x) cannot onload to the CPU it offloads to: its parameter copy
        # raises TypeError inside set_module_tensor_to_device; tests/gpu/test_memory_gpu.py runs this branch
        return
    image = render(pipe)
    assert np.isfinite(image).all()
    np.testing.assert_allclose(image, plain_image, atol=2e-3)


def test_vae_tiling_and_slicing_are_switched_on_and_decode_the_same():
    plain = render(place(tiny_pipe("tiny-sd"), device_plan()), batch=2)
    pipe = place(tiny_pipe("tiny-sd"), device_plan(vae_tiling=True, vae_slicing=True))
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    sliced = render(pipe, batch=2)
    assert sliced.shape == plain.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(sliced, plain, atol=2e-3)  # 64 px is below the tile size: the same decode


def test_forward_chunking_is_set_on_the_video_unet():
    pipe = place(tiny_pipe("tiny-svd"), device_plan(forward_chunking=True, decode_chunk_size=1))
    chunked = [block for block in pipe.unet.modules() if getattr(block, "_chunk_size", None)]
    assert chunked, "enable_forward_chunking set no feed-forward chunk size"
    plain = place(tiny_pipe("tiny-svd"), device_plan())
    assert not [block for block in plain.unet.modules() if getattr(block, "_chunk_size", None)]


def test_sdxl_refiner_shares_modules_under_model_offload_hooks():
    """The engine's own load: base and refiner share the VAE and second text encoder, both placed with hooks."""
    from stablekit import runner
    from stablekit.console import Progress
    from stablekit.jobs import job_from
    from stablekit.sink import CaptureSink

    job = job_from("image", {"prompt": "a lighthouse", "model": "tiny-sdxl", "refiner": True,
                             "refiner_model": "tiny-sdxl", "width": 64, "height": 64, "num_inference_steps": 2,
                             "seed": 3, "device": "cpu"})
    plan = runner.plan_job(job, CPU)
    plan = replace(plan, device_plan=replace(plan.device_plan, offload="model"))
    engine = runner.engine_for("image")
    session = engine.load(plan, Progress())
    assert session.refiner is not None and session.refiner.vae is session.pipe.vae
    assert session.refiner.text_encoder_2 is session.pipe.text_encoder_2
    sink = CaptureSink()
    session.run(plan, sink, {})
    image = np.asarray(sink.values[0])
    assert image.shape == (64, 64, 3) and image.max() > 0


def test_fp32_redecode_after_offload_hooks_restores_the_vae():
    import torch

    from stablekit.engines.image import _decode_fp32

    pipe = place(tiny_pipe("tiny-sdxl", "bfloat16"), device_plan("model", dtype="bfloat16"))
    pipe.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        latents = pipe("a lighthouse", num_inference_steps=1, guidance_scale=0.0, height=64, width=64,
                       generator=torch.Generator("cpu").manual_seed(1), output_type="latent").images
    images = _decode_fp32(pipe, latents)
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert pipe.vae.dtype == torch.bfloat16, "the VAE goes back to the pipeline's dtype after the re-decode"
    again = render(pipe)  # the hooks still work after the dtype round trip
    assert np.isfinite(again).all()
