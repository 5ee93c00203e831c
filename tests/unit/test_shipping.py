"""Outputs shipped as bytes land as the local engine writes them; jobs go to workers holding their model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from stablekit.batch import BatchSink
from stablekit.batch_file import Entry, digest_of
from stablekit.devices import DevicePlan
from stablekit.jobs import job_from
from stablekit.shipping import ShippingSink, as_output, pack_inputs, restore_inputs, unpack_inputs
from stablekit.sink import Output, Written


def entry(job_id: str, model: str = "tiny-sd", **values) -> Entry:
    job = job_from("image", {"prompt": "a fox", "model": model, "id": job_id, "output": job_id + ".obj",
                             "seed": 1, **values})
    return Entry(job, "jobs line 1", 1, digest_of(job))


@dataclass
class FakePlan:
    device_plan: DevicePlan


def obj_output(plan) -> Output:
    """A writer with a companion that names the main file's stem inside it (as a textured OBJ does)."""

    def write(path: Path, overwrite: bool) -> Written:
        material = path.with_suffix(".mtl")
        path.parent.mkdir(parents=True, exist_ok=True)
        material.write_text(f"material of {path.stem}")
        path.write_text(f"mtllib {material.name}")
        return Written(path, extra=[material], info={"files": [str(material)]}, parameters={"companions": 1})

    return Output("mesh", ".obj", write, {"prompt": "a fox"}, plan, None, seed=1, name="a fox")


def test_a_shipped_output_lands_with_the_bytes_sidecar_and_names_of_a_local_one(tmp_path):
    from stablekit.devices import Overrides, Workload, probe
    from stablekit.devices import plan as plan_device

    job_entry = entry("fox")
    device_plan = plan_device(job_entry.job.spec, probe("cpu"), Workload(64, 64), Overrides(device="cpu"))
    local = BatchSink(tmp_path / "local")
    local.begin(job_entry)
    local.emit(job_entry.job, obj_output(FakePlan(device_plan)))
    worker = ShippingSink()
    worker.begin(job_entry)
    worker.emit(job_entry.job, obj_output(FakePlan(device_plan)))
    (shipped,) = worker.shipped
    assert shipped.name == "fox.obj" and shipped.extras == {"fox.mtl": b"material of fox"}
    worker.close()
    driver = BatchSink(tmp_path / "ray")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "fox.obj").write_text("someone else's")  # numbered around, companion renamed with it
    driver.begin(job_entry)
    item = driver.emit(shipped.job, as_output(shipped))
    assert Path(item["path"]).name == "fox-2.obj" and item["files"] == [str(tmp_path / "ray" / "fox-2.mtl")]
    assert (tmp_path / "ray" / "fox-2.mtl").read_text() == "material of fox"
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "local" / "fox.obj.json", tmp_path / "ray" /
                                                    "fox-2.obj.json")]
    assert sidecars[0]["parameters"] == sidecars[1]["parameters"]
    assert sidecars[1]["parameters"]["job_id"] == "fox" and sidecars[1]["device_plan"] == device_plan.to_dict()


def test_input_files_travel_with_the_job_and_the_record_keeps_their_path(tmp_path):
    picture = tmp_path / "in.png"
    picture.write_bytes(b"png bytes")
    job = entry("fox", image=str(picture)).job
    packed = pack_inputs(job)
    assert packed == {"image": ("in.png", b"png bytes")}
    moved = unpack_inputs(job, packed, tmp_path / "worker")
    assert moved.request.image == str(tmp_path / "worker" / "image" / "in.png")
    assert Path(moved.request.image).read_bytes() == b"png bytes"
    assert restore_inputs(FakeJobPlan(moved), job).job.request.image == str(picture)


@dataclass
class FakeJobPlan:
    job: object


def test_a_free_worker_takes_a_job_of_the_model_it_holds_else_one_no_other_worker_has():
    from stablekit.batch_run import Planned
    from stablekit.distributed import RayDriver, Worker

    driver = RayDriver(BatchSink("."), progress=None, record=lambda r: None)
    a, b = Worker(1, None, held=["tiny-sd"]), Worker(2, None, held=["tiny-sd3"])
    driver.workers = [a, b]
    pending = [Planned(entry("x", "tiny-sd3")), Planned(entry("y", "tiny-sdxl")), Planned(entry("z", "tiny-sd"))]
    assert driver._pick(a, pending).entry.id == "z"  # affinity
    assert driver._pick(a, pending).entry.id == "y"  # a model nobody holds, not b's
    assert driver._pick(a, pending).entry.id == "x"  # only b's model left: take it rather than idle
