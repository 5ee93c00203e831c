"""Native bf16 on the CPU: read from the CPU's flags, bfloat16 planned by default there, float32 elsewhere."""

from __future__ import annotations

import os

import pytest

from stablekit import cpu_features, devices
from stablekit.registry import load_registry

X86_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
X86_AVX512_NO_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16 i8mm\n"


@pytest.mark.parametrize(("text", "native", "flags"), [
    (X86_AMX, True, ("avx512_bf16", "amx_bf16")),
    (X86_AVX2, False, ()),
    (X86_AVX512_NO_BF16, False, ()),  # AVX-512 alone converts bf16 in software
    (ARM_BF16, True, ("bf16",)),
    ("", False, ()),
])
def test_bf16_flags_are_read_from_cpuinfo(tmp_path, text, native, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    features = cpu_features.read(path, platform="linux")
    assert features.native_bf16 is native and features.bf16_flags == flags


def test_an_unreadable_cpuinfo_means_no_bf16(tmp_path):
    assert not cpu_features.read(tmp_path / "missing", platform="linux").native_bf16


def _cpu(bf16: bool) -> devices.Hardware:
    return devices.Hardware("cpu", "test CPU", 64.0, 60.0, 64.0, 60.0, None, 0, cpu_bf16=bf16)


@pytest.mark.parametrize("model", ["sd-turbo", "sdxl", "svd-xt", "stable-audio-open", "stablelm-2-zephyr-1.6b"])
def test_a_bf16_cpu_plans_bfloat16_with_the_reason(model):
    spec = load_registry().get(model)
    plan = devices.plan(spec, _cpu(True), devices.default_workload(spec))
    assert plan.dtype == "bfloat16"
    assert any(r.startswith("dtype bfloat16: this CPU computes") for r in plan.reasons)


@pytest.mark.parametrize("model", ["sd-turbo", "stablelm-2-zephyr-1.6b"])
def test_other_cpus_keep_float32(model):
    spec = load_registry().get(model)
    assert devices.plan(spec, _cpu(False), devices.default_workload(spec)).dtype == "float32"


def test_dtype_float32_keeps_the_old_behaviour_on_a_bf16_cpu():
    spec = load_registry().get("sd-turbo")
    plan = devices.plan(spec, _cpu(True), devices.default_workload(spec), devices.Overrides(dtype="float32"))
    assert plan.dtype == "float32" and "dtype float32: asked for with --dtype" in plan.reasons


@pytest.mark.parametrize("bf16", [False, True])
def test_bfloat16_asked_for_on_a_cpu_without_it_says_it_is_emulated(bf16):
    """--dtype bfloat16 still runs where the CPU lacks bf16 (for its memory), but the plan says what it costs: torch
    emulates it, a convolution ~100x slower than float32 on an AVX2 CPU (benchmarks/bf16.py's notes)."""
    spec = load_registry().get("sd-turbo")
    plan = devices.plan(spec, _cpu(bf16), devices.default_workload(spec), devices.Overrides(dtype="bfloat16"))
    [reason] = [r for r in plan.reasons if r.startswith("dtype ")]
    assert plan.dtype == "bfloat16" and reason.startswith("dtype bfloat16: asked for with --dtype")
    assert ("emulates it" in reason and "far slower" in reason) is not bf16


def test_gpus_are_unaffected_by_the_cpu_flag():
    spec = load_registry().get("sdxl")
    gpu = devices.Hardware("cuda", "GPU", 24.0, 23.0, 64.0, 60.0, (7, 5), 1, cpu_bf16=True)
    assert devices.plan(spec, gpu, devices.default_workload(spec)).dtype == "float16"


def test_probe_records_the_cpu_flag(monkeypatch, tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(X86_AMX)
    monkeypatch.setattr(cpu_features, "CPUINFO", path)
    monkeypatch.setattr(cpu_features.sys, "platform", "linux")
    assert devices.probe("cpu").cpu_bf16 is True
    path.write_text(X86_AVX2)
    assert devices.probe("cpu").cpu_bf16 is False


@pytest.mark.parametrize("preset", [None, "/user/cache"])
def test_the_compile_cache_is_set_for_the_run_only(monkeypatch, preset):
    from stablekit.engines import image

    key = "TORCHINDUCTOR_CACHE_DIR"
    if preset:
        monkeypatch.setenv(key, preset)
    else:
        monkeypatch.delenv(key, raising=False)
    with image._compile_cache(True):
        inside = os.environ[key]
        os.environ[key] = "/somewhere/inductor/wrote"  # inductor writes the variable back itself
    assert inside == (preset or str(image._compile_cache_dir()))
    assert os.environ.get(key) == preset
    with image._compile_cache(False):
        assert os.environ.get(key) == preset
