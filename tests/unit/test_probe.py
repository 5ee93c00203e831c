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
