"""The device manager: probe() the hardware, plan() a pure fit of a model to it, place() a pipeline as planned.

The planning is pure and lives in planner.py (the search, with reasons) and memory_plan.py (the estimates);
this module holds the impure ends: reading the machine and calling diffusers' offload / tiling / slicing APIs
(place() is the only code that does).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .errors import DoesNotFitError
from .memory_plan import GIB, Workload
from .planner import (
    DTYPES,
    OFFLOADS,
    DevicePlan,
    Hardware,
    Overrides,
    default_workload,
    hypothetical,
    normalize_dtype,
    plan,
)

__all__ = ["DTYPES", "GIB", "OFFLOADS", "DevicePlan", "DoesNotFitError", "Hardware", "Overrides", "Workload",
           "default_workload", "free_memory", "hypothetical", "normalize_dtype", "place", "plan", "probe",
           "torch_dtype", "transformers_load_kwargs"]


def probe(device: str | None = None) -> Hardware:
    """Read the machine: a CUDA GPU (the one `device` names as cuda:N, else the first; free memory now), else
    MPS, else CPU; and system RAM. A cuda:N beyond the GPUs present reads GPU 0 and lets plan() refuse it."""
    import psutil

    from .cpu_features import native_bf16

    memory = psutil.virtual_memory()
    ram_total, ram_free = memory.total / GIB, memory.available / GIB
    cpu_bf16 = native_bf16()  # --device cpu on a GPU machine plans with it too
    if _cpu_only_torch():
        return _cpu_hardware(ram_total, ram_free, cpu_bf16)
    import torch

    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        index = _gpu_index(device)
        index = index if index is not None and index < count else 0
        free, total = torch.cuda.mem_get_info(index)
        name = torch.cuda.get_device_name(index)
        if count > 1:
            name = f"{name} (GPU {index} of {count})"
        return Hardware("cuda", name, round(total / GIB, 2), round(free / GIB, 2), round(ram_total, 2),
                        round(ram_free, 2), tuple(torch.cuda.get_device_capability(index)), count, cpu_bf16)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return Hardware("mps", "Apple silicon", round(ram_total, 2), round(ram_free, 2), round(ram_total, 2),
                        round(ram_free, 2), None, 1, cpu_bf16)
    return _cpu_hardware(ram_total, ram_free, cpu_bf16)


def _cpu_hardware(ram_total: float, ram_free: float, cpu_bf16: bool) -> Hardware:
    import platform

    import psutil

    name = platform.processor() or platform.machine()
    return Hardware("cpu", f"{name} ({psutil.cpu_count()} cores)", round(ram_total, 2), round(ram_free, 2),
                    round(ram_total, 2), round(ram_free, 2), None, 0, cpu_bf16)


def _cpu_only_torch() -> bool:
    """A CPU-only torch build (PyTorch's CPU wheels, version "X+cpu") off macOS can reach no CUDA or MPS device,
    so the probe need not import torch (2-4 s of a --dry-run); any other build, or torch already imported, asks
    torch itself."""
    from importlib.metadata import PackageNotFoundError, version

    if "torch" in sys.modules or sys.platform == "darwin":
        return False
    try:
        return version("torch").endswith("+cpu")
    except PackageNotFoundError:
        return False


def _gpu_index(device: str | None) -> int | None:
    """N of "cuda:N" (None for anything else; plan() says what is wrong with a bad one)."""
    if device and device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def torch_dtype(plan_: DevicePlan):
    import torch

    return getattr(torch, plan_.dtype)


def place(pipe, plan_: DevicePlan):
    """Place a loaded diffusers pipeline as planned: the only caller of offload, tiling and slicing APIs."""
    import torch

    if plan_.offload == "none":
        pipe.to(plan_.device)
    elif plan_.offload == "model":
        pipe.enable_model_cpu_offload(device=plan_.device)
    elif plan_.offload == "group":  # streams overlap the transfers, and exist only on CUDA
        onload = torch.device(plan_.device)
        pipe.enable_group_offload(onload_device=onload, offload_device=torch.device("cpu"),
                                  offload_type="block_level", num_blocks_per_group=1, use_stream=onload.type == "cuda")
    else:
        pipe.enable_sequential_cpu_offload(device=plan_.device)
    vae = getattr(pipe, "vae", None)
    if plan_.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if plan_.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    if plan_.attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
    unet = getattr(pipe, "unet", None)
    if plan_.forward_chunking and hasattr(unet, "enable_forward_chunking"):
        unet.enable_forward_chunking()
    return pipe


def transformers_load_kwargs(plan_: DevicePlan) -> dict[str, Any]:
    """from_pretrained arguments for a transformers model: where the weights go is decided at load time."""
    if plan_.offload == "none":
        return {}
    device = plan_.device if ":" in plan_.device else f"{plan_.device}:0"
    gpu_index = int(device.split(":")[1])
    # accelerate places weights up to max_memory and nothing else: hand it what the plan left for weights
    # beside the KV cache and activations, not the whole budget
    weights = plan_.device_weights_gib if plan_.device_weights_gib is not None else plan_.budget_gib
    return {"device_map": "auto", "max_memory": {gpu_index: f"{math.floor(weights * 1024)}MiB", "cpu": "1024GiB"}}


def free_memory(device: str) -> None:
    """Give memory back after a model is released: Python's garbage, then the accelerator's cache."""
    import gc

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and device.startswith("cuda"):
        torch.cuda.empty_cache()
    elif torch is not None and device == "mps":
        torch.mps.empty_cache()
