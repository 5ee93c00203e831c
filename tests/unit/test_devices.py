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
                for p in ("cuda-80GB-cc9.0", "cuda-12GB-cc8.9", "cuda-8GB-cc8.9", "cuda-4GB-cc7.5")]
    assert offloads[0] == "none"
    assert [order.index(o) for o in offloads] == sorted(order.index(o) for o in offloads)
    assert offloads[-1] != "none"


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
