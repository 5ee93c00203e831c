"""`--quantize int8` for text models on the CPU: the plan it makes, and the model it loads."""

from __future__ import annotations

from ..errors import UsageError
from ..planning import Plan

QUANTIZE = ("int8",)


def with_quantize(planned: Plan) -> Plan:
    """--quantize int8: int8 weights in the linear layers, float32 activations, on the CPU only."""
    from dataclasses import replace

    request, device_plan = planned.request, planned.device_plan
    if request.quantize is None:
        return planned
    if request.quantize not in QUANTIZE:
        raise UsageError(f"--quantize {request.quantize}: unknown", hint="use --quantize int8, or leave it out")
    if device_plan.device != "cpu":
        raise UsageError(f"--quantize int8 runs on the CPU only (this job runs on {device_plan.device})",
                         hint="drop --quantize, or add --device cpu")
    if request.dtype not in (None, "float32", "fp32"):
        raise UsageError(f"--quantize int8 computes in float32 with int8 weights: --dtype {request.dtype} does not mix",
                         hint="drop --dtype")
    reasons = tuple(r for r in device_plan.reasons if not r.startswith("dtype "))
    reasons += ("dtype float32 with int8 weights: asked for with --quantize int8 (torch dynamic quantisation of "
                "the linear layers; text may differ slightly from float32)",)
    return replace(planned, device_plan=replace(device_plan, dtype="float32", reasons=reasons))


def quantize_int8(model):
    """The model with its linear layers' weights in int8 (one scale per output channel), quantised as it loads;
    activations are quantised on the fly (torch.ao's dynamic quantisation, CPU only)."""
    import warnings

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantised tensor type deprecated (torchao replaces it)
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)
