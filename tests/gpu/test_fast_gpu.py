"""`--fast` on a real CUDA GPU: it runs, and it paints the picture the default plan paints (to a small tolerance).

Skipped without CUDA (marker `gpu`); the speed is benchmarks/gpu.py's business.

    python -m pytest -m gpu tests/gpu/test_fast_gpu.py
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def render(**flags):
    import numpy as np

    from stablekit import runner
    from stablekit.console import Progress
    from stablekit.jobs import job_from
    from stablekit.sink import CaptureSink

    job = job_from("image", {"prompt": "a lighthouse", "model": "tiny-sd", "width": 64, "height": 64,
                             "num_inference_steps": 2, "seed": 3, "device": "cuda", **flags})
    plan = runner.plan_job(job)
    session = runner.engine_for("image").load(plan, Progress())
    sink = CaptureSink()
    session.run(plan, sink, {})
    session.close()
    return plan, np.asarray(sink.values[0], dtype=np.int16)


def test_fast_paints_what_the_default_plan_paints():
    plan, default = render()
    fast_plan, fast = render(fast=True)
    assert plan.device_plan.device.startswith("cuda") and fast_plan.request.fast
    assert default.shape == fast.shape == (64, 64, 3)
    # compiled kernels, fused projections and another attention kernel round differently in bf16
    assert abs(default - fast).max() <= 12
    assert abs(default - fast).mean() <= 2.0
