"""The device planner as a table: every catalog model on every hardware profile fits or says what would."""

from __future__ import annotations

import pytest

from stablekit.devices import DoesNotFitError, Hardware, Overrides, default_workload, plan
from stablekit.errors import UsageError
from stablekit.registry import load_registry

PROFILES = {
    "cpu-16GB": Hardware("cpu", "cpu", 16, 14, 16, 14),
    "mps-16GB": Hardware("mps", "Apple M2", 16, 12, 16, 12, None, 1),
    "cuda-4GB-cc7.5": Hardware("cuda", "GTX 1650", 4, 3.8, 16, 13, (7, 5), 1),
    "cuda-6GB-cc7.5": Hardware("cuda", "RTX 2060", 6, 5.7, 32, 28, (7, 5), 1),
    "cuda-8GB-cc8.9": Hardware("cuda", "RTX 4060", 8, 7.6, 32, 28, (8, 9), 1),
    "cuda-12GB-cc8.9": Hardware("cuda", "RTX 4070", 12, 11.5, 32, 28, (8, 9), 1),
    "cuda-24GB-cc8.9": Hardware("cuda", "RTX 4090", 24, 23.4, 64, 60, (8, 9), 1),
    "cuda-24GB-cc7.5": Hardware("cuda", "Quadro RTX 6000", 24, 23.4, 64, 60, (7, 5), 1),
    "cuda-80GB-cc9.0": Hardware("cuda", "H100", 80, 79, 256, 250, (9, 0), 1),
}
SPECS = list(load_registry())


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.id)
def test_every_model_fits_or_says_what_would(spec, profile):
    hardware = PROFILES[profile]
    try:
        result = plan(spec, hardware, default_workload(spec))
    except DoesNotFitError as err:
        assert spec.id in err.message and "GiB" in err.message
        assert err.hint and "another model" in err.hint
        assert "\n" not in err.message
        return
    assert result.peak_gib <= result.budget_gib
    assert result.dtype in ("float32", "float16", "bfloat16")
    assert result.device == hardware.accelerator
    if hardware.accelerator == "cpu":
        assert result.dtype == "float32" and result.offload == "none"
    if hardware.compute_capability == (7, 5):
        assert result.dtype == "float16"
    if hardware.compute_capability and hardware.compute_capability >= (8, 0):
        assert result.dtype == "bfloat16"
    if hardware.accelerator != "cuda":
        assert result.offload == "none"
    assert result.generator_device == "cpu"
    assert len(result.reasons) >= 4 and all(result.reasons)


def test_all_small_models_run_everywhere():
    """SD 1.5, SD-Turbo, the 1.6B LMs and the tiny models fit every profile, offloading where needed."""
    for spec in SPECS:
        if spec.id in ("sd15", "sd-turbo", "stablelm-2-1.6b", "stable-audio-open") or spec.tiny:
            for hardware in PROFILES.values():
                plan(spec, hardware, default_workload(spec))


def test_less_vram_means_more_offload():
    sdxl = load_registry().get("sdxl")
    order = ["none", "model", "group", "sequential"]
    offloads = [plan(sdxl, PROFILES[p], default_workload(sdxl)).offload
                for p in ("cuda-80GB-cc9.0", "cuda-24GB-cc8.9", "cuda-12GB-cc8.9", "cuda-8GB-cc8.9")]
    assert offloads[0] == "none" and offloads[-1] != "none"
    assert [order.index(o) for o in offloads] == sorted(order.index(o) for o in offloads)


def test_sdxl_at_1024_on_4gb_fp16_says_a_smaller_size_fits():
    """fp16 (no bf16 at cc 7.5): SDXL's VAE decodes upcast to fp32, 4.3 GiB for one 1024^2 image, and its
    tiles are 1024 px, so no offload brings it under 3.4 GiB; 768^2 does fit."""
    sdxl = load_registry().get("sdxl")
    with pytest.raises(DoesNotFitError) as err:
        plan(sdxl, PROFILES["cuda-4GB-cc7.5"], default_workload(sdxl))
    assert "--width 768 --height 768" in err.value.hint
    assert plan(sdxl, PROFILES["cuda-4GB-cc7.5"], default_workload(sdxl, width=768, height=768)).offload != "none"


def test_reasons_name_the_memory_figures():
    sdxl = load_registry().get("sdxl")
    result = plan(sdxl, PROFILES["cuda-8GB-cc8.9"], default_workload(sdxl))
    text = " ".join(result.reasons)
    assert "bfloat16" in text and "8.9" in text
    assert f"{result.peak_gib:.1f} GiB" in text
    assert "not everything on the device" in text


def test_vram_override_plans_as_if_that_much_were_free():
    sdxl = load_registry().get("sdxl")
    big = plan(sdxl, PROFILES["cuda-8GB-cc8.9"], default_workload(sdxl), Overrides(vram_gib=40))
    assert big.offload == "none" and big.budget_gib == pytest.approx(36.0)
    assert "--vram" in big.reasons[2]


def test_forced_offload_is_respected_or_refused():
    sdxl = load_registry().get("sdxl")
    forced = plan(sdxl, PROFILES["cuda-24GB-cc8.9"], default_workload(sdxl), Overrides(offload="sequential"))
    assert forced.offload == "sequential" and forced.attention_slicing
    with pytest.raises(DoesNotFitError) as err:
        plan(sdxl, PROFILES["cuda-4GB-cc7.5"], default_workload(sdxl), Overrides(offload="none"))
    assert "drop --offload" in err.value.hint


def test_bigger_images_need_more_memory_and_get_tiling():
    sdxl = load_registry().get("sdxl")
    small = plan(sdxl, PROFILES["cuda-12GB-cc8.9"], default_workload(sdxl))
    large = plan(sdxl, PROFILES["cuda-12GB-cc8.9"], default_workload(sdxl, width=1536, height=1536, batch=2))
    assert large.offload != "none" or large.vae_tiling
    assert large.vae_tiling or large.vae_slicing
    assert small.peak_gib <= small.budget_gib and large.peak_gib <= large.budget_gib


def test_does_not_fit_suggests_a_smaller_size():
    svd = load_registry().get("svd-xt")
    with pytest.raises(DoesNotFitError) as err:
        plan(svd, PROFILES["cpu-16GB"], default_workload(svd))
    assert "--width" in err.value.hint and "fewer --frames" in err.value.hint


@pytest.mark.parametrize("profile", ["cuda-8GB-cc8.9", "cuda-12GB-cc8.9", "cuda-24GB-cc8.9"])
def test_svd_xt_decodes_in_chunks(profile):
    svd = load_registry().get("svd-xt")
    result = plan(svd, PROFILES[profile], default_workload(svd))
    assert result.decode_chunk_size < 25 and result.forward_chunking
    assert result.peak_gib <= result.budget_gib


def test_text_models_offload_with_a_device_map():
    from stablekit.devices import transformers_load_kwargs

    lm = load_registry().get("stablelm-2-12b-chat")
    result = plan(lm, PROFILES["cuda-12GB-cc8.9"], default_workload(lm))
    assert result.offload == "model"
    kwargs = transformers_load_kwargs(result)
    assert kwargs["device_map"] == "auto" and kwargs["max_memory"][0].endswith("MiB")


@pytest.mark.parametrize(("overrides", "message"), [
    (Overrides(device="cuda"), "no CUDA device"),
    (Overrides(device="tpu"), "unknown device"),
    (Overrides(dtype="int3"), "unknown dtype"),
    (Overrides(offload="model"), "needs a CUDA GPU"),
    (Overrides(vram_gib=0), "positive"),
])
def test_impossible_overrides_are_usage_errors(overrides, message):
    spec = load_registry().get("sd15")
    with pytest.raises(UsageError) as err:
        plan(spec, PROFILES["cpu-16GB"], default_workload(spec), overrides)
    assert message in err.value.message


def test_bf16_on_a_gpu_without_it_is_refused():
    spec = load_registry().get("sd15")
    with pytest.raises(UsageError, match="no bf16"):
        plan(spec, PROFILES["cuda-6GB-cc7.5"], default_workload(spec), Overrides(dtype="bf16"))


def test_plan_is_pure():
    spec = load_registry().get("sd3-medium")
    first = plan(spec, PROFILES["cuda-12GB-cc8.9"], default_workload(spec))
    assert first == plan(spec, PROFILES["cuda-12GB-cc8.9"], default_workload(spec))


# --- issue 17: the plans against measured and published peaks ------------------------------------------------

def test_sdxl_batch_4_on_16gb_decodes_one_image_at_a_time():
    """Published (A100): SDXL batch 4 with model offload ~20 GB, because the VAE decodes the 4 images at once
    (in fp32: force_upcast). A 16 GB card must not get that: the batch is decoded one image at a time."""
    from stablekit.memory_plan import Strategy, estimate

    sdxl = load_registry().get("sdxl")
    work = default_workload(sdxl, batch=4)
    unsliced = estimate(sdxl, work, "float16", "cuda", Strategy("model"))
    assert 0.85 <= unsliced.peak / (20.2e9 / 1024**3) <= 1.15 and unsliced.phase == "decode"
    for cc in ((8, 9), (7, 5)):
        result = plan(sdxl, Hardware("cuda", "16 GB", 16, 15.5, 64, 60, cc, 1), work)
        assert result.vae_slicing and result.peak_gib <= result.budget_gib
        sliced = estimate(sdxl, work, result.dtype, "cuda", Strategy(result.offload, result.vae_tiling, True))
        assert sliced.peak == pytest.approx(result.peak_gib, abs=0.01)


def test_sd3_medium_model_offload_plans_t5_beside_a_clip_encoder():
    """Published: SD3 Medium with model offload ~12.1 GB; T5 (8.9 GiB) stays while CLIP-G runs again. On a 12 GB
    card (11.5 GiB free) that phase, 10.3 GiB allocated and ~11.0 reserved (model offload reserved 1.07x its
    allocated peak on the H200, tests/gpu), fits: model offload is the plan there, inside the budget."""
    from stablekit.memory_plan import Strategy, estimate

    sd3 = load_registry().get("sd3-medium")
    work = default_workload(sd3)
    model = estimate(sd3, work, "float16", "cuda", Strategy("model"))
    assert 0.85 <= model.peak / (12.1e9 / 1024**3) <= 1.15 and "text_encoder_3" in model.phase
    on_12gb = plan(sd3, PROFILES["cuda-12GB-cc8.9"], work)
    assert on_12gb.offload == "model" and on_12gb.peak_gib <= on_12gb.budget_gib
    on_16gb = plan(sd3, Hardware("cuda", "16 GB", 16, 15.5, 64, 60, (8, 9), 1), work)
    assert on_16gb.offload == "model" and on_16gb.peak_gib <= on_16gb.budget_gib


def test_stable_audio_plans_its_full_window_whatever_the_length():
    audio = load_registry().get("stable-audio-open")
    short, full = (plan(audio, PROFILES["cuda-8GB-cc8.9"], default_workload(audio, seconds=s)) for s in (2, 47))
    assert short.peak_gib == full.peak_gib


def test_device_map_gets_the_budget_left_beside_the_kv_cache():
    from stablekit.devices import transformers_load_kwargs
    from stablekit.memory_plan import kv_cache_gib

    lm = load_registry().get("stablelm-2-12b-chat")
    result = plan(lm, PROFILES["cuda-24GB-cc8.9"], default_workload(lm))
    assert result.offload == "model" and 0 < result.device_weights_gib < result.budget_gib
    kv = kv_cache_gib(lm, 4096, "bfloat16")
    assert kv == pytest.approx(2 * 40 * 8 * 160 * 4096 * 2 / 1024**3)
    assert result.device_weights_gib + kv <= result.budget_gib
    budget = transformers_load_kwargs(result)["max_memory"][0]
    assert budget == f"{int(result.device_weights_gib * 1024)}MiB"  # accelerate is handed the same figure


def test_cpu_load_peak_counts_the_file_dtype_copy():
    """Measured (benchmarks/memory.py): SD-Turbo from 16-bit files peaks above its fp32 weights while loading;
    loaded as bf16 the files are mapped, not copied."""
    from stablekit.memory_plan import Strategy, estimate

    turbo = load_registry().get("sd-turbo")
    work = default_workload(turbo)
    fp32 = estimate(turbo, work, "float32", "cpu", Strategy())
    bf16 = estimate(turbo, work, "bfloat16", "cpu", Strategy())
    assert fp32.load - fp32.weights == pytest.approx(865.9e6 * 2 / 1024**3 + 0.5, abs=0.01)
    assert bf16.load == pytest.approx(0.5, abs=0.01)  # mapped: resident only once the generation touches them


def test_planning_for_a_gpu_this_machine_lacks():
    from stablekit.devices import hypothetical

    cpu = PROFILES["cpu-16GB"]
    sdxl = load_registry().get("sdxl")
    gpu = hypothetical(cpu, "cuda", 8, (7, 5))
    result = plan(sdxl, gpu, default_workload(sdxl, width=768, height=768), Overrides(device="cuda", vram_gib=8))
    assert result.device == "cuda" and result.dtype == "float16" and "does not have" in result.reasons[0]
    assert hypothetical(cpu, "cuda", 8).compute_capability == (8, 0)
    assert hypothetical(cpu, "cpu", 8) is cpu
    with pytest.raises(UsageError, match="say how much memory"):
        hypothetical(cpu, "mps", None)


def test_a_plan_that_does_not_fit_carries_the_failing_plan():
    sdxl = load_registry().get("sdxl")
    with pytest.raises(DoesNotFitError) as err:
        plan(sdxl, PROFILES["cuda-4GB-cc7.5"], default_workload(sdxl))
    failed = err.value.failed_plan
    assert failed.fits is False and failed.peak_gib > failed.budget_gib
    assert failed.reasons[-1].startswith("does not fit: sdxl does not fit")
    assert "GiB free" in err.value.hint


def test_dry_run_plans_an_absent_gpu_and_shows_a_failing_plan(monkeypatch):
    """runner.dry_run on this (GPU-less or not) machine: --device cuda --vram plans a hypothetical GPU; a plan
    that does not fit is yielded with fits: false before DoesNotFitError; without --dry-run it stays an error."""
    from stablekit import devices, runner
    from stablekit.jobs import job_from

    monkeypatch.setattr(devices, "probe", lambda device=None: PROFILES["cpu-16GB"])
    job = job_from("image", {"prompt": "a cat", "model": "sdxl", "device": "cuda", "vram": 6.0, "seed": 1})
    (record,) = runner.dry_run(job, compute_capability=(7, 5))
    assert record["fits"] and record["hardware"]["hypothetical"] and record["hardware"]["accelerator"] == "cuda"
    assert record["plan"]["dtype"] == "float16" and record["plan"]["peak_gib"] <= record["plan"]["budget_gib"]
    small = job.with_request(vram=2.0)
    shown = []
    with pytest.raises(DoesNotFitError):
        for data in runner.dry_run(small):
            shown.append(data)
    assert [d["fits"] for d in shown] == [False] and shown[0]["plan"]["fits"] is False
    with pytest.raises(UsageError, match="no CUDA device"):
        runner.plan_job(job)
