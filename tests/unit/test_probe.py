"""devices.probe() with a fake torch.cuda: --device cuda:N reads GPU N's memory and capability, not GPU 0's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from stablekit import devices

GIB = 1024**3
GPUS = [("GPU zero", 8 * GIB, 4 * GIB, (7, 5)), ("GPU one", 80 * GIB, 70 * GIB, (9, 0))]


@pytest.fixture
def two_gpus(monkeypatch):
    import torch

    cuda = SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: len(GPUS),
        mem_get_info=lambda index=0: (GPUS[index][2], GPUS[index][1]),
        get_device_name=lambda index=0: GPUS[index][0],
        get_device_capability=lambda index=0: GPUS[index][3],
    )
    monkeypatch.setattr(torch, "cuda", cuda)
    import psutil  # a machine with RAM to spare, whatever this one has free right now

    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=64 * GIB, available=48 * GIB))


@pytest.mark.parametrize(("device", "name", "free", "capability"), [
    (None, "GPU zero", 4.0, (7, 5)), ("cuda", "GPU zero", 4.0, (7, 5)), ("cuda:0", "GPU zero", 4.0, (7, 5)),
    ("cuda:1", "GPU one", 70.0, (9, 0)), ("auto", "GPU zero", 4.0, (7, 5)),
])
def test_probe_reads_the_gpu_asked_for(two_gpus, device, name, free, capability):
    hardware = devices.probe(device)
    assert hardware.accelerator == "cuda" and hardware.device_count == 2
    assert hardware.name.startswith(name) and hardware.memory_free_gib == free
    assert hardware.compute_capability == capability


def test_gpu_one_plans_with_its_own_memory_and_bf16(two_gpus):
    from stablekit.registry import load_registry

    spec = load_registry().get("sdxl")
    work = devices.default_workload(spec, width=768, height=768)  # 1024^2 does not fit 4 GiB in fp16
    on_one = devices.plan(spec, devices.probe("cuda:1"), work, devices.Overrides(device="cuda:1"))
    on_zero = devices.plan(spec, devices.probe("cuda:0"), work, devices.Overrides(device="cuda:0"))
    assert on_one.dtype == "bfloat16" and on_one.offload == "none" and on_one.budget_gib > 60
    assert on_zero.dtype == "float16" and on_zero.budget_gib < 4


def test_a_gpu_that_is_not_there_is_refused_by_the_plan(two_gpus):
    from stablekit.errors import UsageError
    from stablekit.registry import load_registry

    spec = load_registry().get("sd15")
    hardware = devices.probe("cuda:7")
    with pytest.raises(UsageError, match="no such GPU"):
        devices.plan(spec, hardware, devices.default_workload(spec), devices.Overrides(device="cuda:7"))


@pytest.mark.parametrize(("installed", "platform", "expected"), [
    ("2.13.0+cpu", "linux", True), ("2.13.0+cpu", "win32", True), ("2.13.0", "linux", False),
    ("2.13.0+cu130", "linux", False), ("2.13.0+rocm6.4", "linux", False), ("2.13.0+cpu", "darwin", False),
    (None, "linux", False),
])
def test_only_a_cpu_build_of_torch_skips_importing_it(monkeypatch, installed, platform, expected):
    """PyTorch's CPU wheels can reach no GPU, so a plan (a --dry-run) need not import torch to know it."""
    import importlib.metadata
    import sys

    def version(name):
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh CLI process (restored after the test)
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(sys, "platform", platform)
    assert devices._cpu_only_torch() is expected


def test_torch_already_imported_is_asked_itself(monkeypatch, two_gpus):
    """In a process that has torch (a server, a test), its answer counts, whatever the wheel's name says."""
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.13.0+cpu")
    assert devices._cpu_only_torch() is False
    assert devices.probe().accelerator == "cuda"


def test_the_cpu_fast_path_reads_ram_cores_and_bf16(monkeypatch):
    import psutil

    monkeypatch.setattr(devices, "_cpu_only_torch", lambda: True)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=64 * GIB, available=48 * GIB))
    import torch

    import stablekit.cpu_features

    monkeypatch.setattr(stablekit.cpu_features, "native_bf16", lambda: True)

    def asked():
        raise AssertionError("torch was asked")

    monkeypatch.setattr(torch.cuda, "is_available", asked)
    hardware = devices.probe(None)
    assert (hardware.accelerator, hardware.memory_total_gib, hardware.ram_available_gib) == ("cpu", 64.0, 48.0)
    assert hardware.cpu_bf16 is True and f"({psutil.cpu_count()} cores)" in hardware.name
