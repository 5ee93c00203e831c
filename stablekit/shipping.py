"""Outputs and input files as bytes, so a job can render on one machine and land on another.

A Ray worker renders into `ShippingSink`, which runs each output's writer into a private temporary folder
and reads the files back (`Shipped`: bytes plus the parameters, plan and facts the sidecar needs). The driver
hands each `Shipped` to its normal sink as an `Output` whose writer puts those bytes in place
(`as_output`), so names, numbering, sidecars and the manifest are made exactly where and as the local
engine makes them. Input files a job names (an init image, a mask) travel the other way (`pack_inputs`,
`unpack_inputs`).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import InputError
from .sink import Output, Sink, Written

# Request fields that name an input file the worker must read.
INPUT_FIELDS = ("image", "mask")


@dataclass
class Shipped:
    """One finished output, written on a worker and read back: everything the driver's sink needs."""

    job: Any  # the stablekit.jobs.Job the engine emitted it for (a kept stage image has its own)
    kind: str
    extension: str
    name: str  # the file (or folder) name it was written under, relative to its folder
    data: bytes | None  # the main file; None for a folder
    folder_files: dict[str, bytes] | None  # a folder of frames: relative name -> bytes
    extras: dict[str, bytes]  # files that belong to the main one (an OBJ's material and texture), by name
    parameters: dict[str, Any]
    device_plan: Any  # the stablekit.devices.DevicePlan it ran with (the sidecar records it)
    model_folder: str | None
    seed: int | None
    prompt_name: str
    info: dict[str, Any]  # the result record's extra keys (a text job's answer)
    written_info: dict[str, Any]
    written_parameters: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)  # the worker's library versions (provenance)

    @property
    def size(self) -> int:
        files = self.folder_files or {}
        return len(self.data or b"") + sum(map(len, files.values())) + sum(map(len, self.extras.values()))


@dataclass(frozen=True)
class _PlanView:
    """What the sink reads of an output's plan: its device plan."""

    device_plan: Any


class ShippingSink(Sink):
    """A worker's sink: outputs are written into a temporary folder, read back as `Shipped`, and removed.

    It numbers outputs within a job as stablekit.batch.BatchSink does, so each writer sees the name the
    driver will give the file (formats that name their companions inside the file stay byte-identical)."""

    def __init__(self) -> None:
        from .ray_cluster import private_folder

        super().__init__(private_folder("worker"), overwrite=True)
        self.total = 1
        self.shipped: list[Shipped] = []

    def begin(self, entry) -> None:
        from .jobs import output_count

        self.index, self.total = 0, output_count(entry.job)
        self.shipped = []
        self.clear()

    def emit(self, job, out: Output) -> dict:
        from .provenance import versions

        index = self.index
        self.index += 1
        name = self.target(job, out, index).name
        folder = Path(tempfile.mkdtemp(prefix=f"{index}-", dir=self.output_dir))
        parameters = dict(out.parameters)  # as they are when handed over: what the driver's BatchSink copies too
        written = out.write(folder / name, True)
        written = written if isinstance(written, Written) else Written(written)
        main = written.path
        extras = {path.name: path.read_bytes() for path in written.extra if path.is_file()}
        if main.is_dir():
            data, files = None, {str(p.relative_to(main)): p.read_bytes() for p in sorted(main.rglob("*"))
                                 if p.is_file()}
        else:
            data, files = main.read_bytes(), None
        self.shipped.append(Shipped(
            job=job, kind=out.kind, extension=out.extension, name=main.name, data=data, folder_files=files,
            extras=extras, parameters=parameters, device_plan=out.plan.device_plan,
            model_folder=str(out.folder) if out.folder else None, seed=out.seed, prompt_name=out.name,
            info=_plain(out.info), written_info=_plain(written.info), written_parameters=written.parameters,
            versions=versions()))
        item = {"path": str(main), "kind": out.kind, "model": job.spec.id, "seed": out.seed, "index": index,
                **out.info, **written.info}
        self.results.append(item)
        return item

    def clear(self) -> None:
        """Remove what earlier jobs wrote here (their bytes are shipped)."""
        root = Path(self.output_dir)
        for path in root.iterdir() if root.is_dir() else ():
            shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.output_dir, ignore_errors=True)


def _plain(info: dict[str, Any]) -> dict[str, Any]:
    """Facts for the result record, with the worker's temporary paths reduced to file names (the driver puts
    its own paths back in `as_output`)."""
    return {key: ([Path(v).name for v in value] if key == "files" and isinstance(value, list) else value)
            for key, value in info.items()}


def as_output(shipped: Shipped) -> Output:
    """The Output a driver's sink writes: its writer puts the shipped bytes in place under the name the sink
    chose (numbered around existing files as any writer is, companions renamed with it)."""

    def write(path: Path, overwrite: bool) -> Written:
        if shipped.folder_files is not None:
            main, extra = _write_folder(shipped.folder_files, path, overwrite), []
        elif shipped.extras:
            main = _write_together(shipped, path, overwrite)
            extra = [main.with_name(_renamed(name, shipped.name, main.name)) for name in shipped.extras]
        else:
            from .outputs import write_atomic

            main, extra = write_atomic(path, lambda tmp: tmp.write_bytes(shipped.data or b""),
                                       overwrite=overwrite), []
        info = dict(shipped.written_info)
        if isinstance(info.get("files"), list):
            info["files"] = [str(main.with_name(_renamed(name, shipped.name, main.name))) for name in info["files"]]
        return Written(main, extra=extra, info=info, parameters=dict(shipped.written_parameters))

    return Output(shipped.kind, shipped.extension, write, dict(shipped.parameters), _PlanView(shipped.device_plan),
                  Path(shipped.model_folder) if shipped.model_folder else None, seed=shipped.seed,
                  name=shipped.prompt_name, info=dict(shipped.info))


def _renamed(name: str, old_main: str, new_main: str) -> str:
    """A companion's name once its main file is numbered (fox.obj -> fox-2.obj: fox.mtl -> fox-2.mtl)."""
    old_stem, new_stem = Path(old_main).stem, Path(new_main).stem
    return new_stem + name[len(old_stem):] if name.startswith(old_stem) and old_stem != new_stem else name


def _write_together(shipped: Shipped, path: Path, overwrite: bool) -> Path:
    from .writers.mesh import write_together

    def contents(target: Path) -> dict[Path, bytes]:
        files = {target.with_name(_renamed(name, shipped.name, target.name)): data
                 for name, data in shipped.extras.items()}
        files[target] = shipped.data or b""  # the main file last
        return files

    return write_together(contents, path, overwrite=overwrite)


def _write_folder(files: dict[str, bytes], folder: Path, overwrite: bool) -> Path:
    """A folder of frames, written as the frames writer does: a temporary sibling renamed into place."""
    import os

    from .errors import OutputError
    from .writers.video import _move_into_place

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    except OSError as err:
        raise OutputError(f"cannot write {folder}: {err.strerror}") from None
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        return _move_into_place(tmp, folder, overwrite)
    except OSError as err:
        raise OutputError(f"cannot write {folder}: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def pack_inputs(job) -> dict[str, tuple[str, bytes]]:
    """The input files a job names, read here (the driver's machine): field -> (file name, bytes)."""
    packed = {}
    for name in INPUT_FIELDS:
        value = getattr(job.request, name, None)
        if not value:
            continue
        path = Path(value).expanduser()
        try:
            packed[name] = (path.name, path.read_bytes())
        except OSError as err:
            raise InputError(f"--{name} {value}: cannot read it ({err.strerror})") from None
    return packed


def unpack_inputs(job, packed: dict[str, tuple[str, bytes]], folder: Path):
    """The job with each shipped input written under `folder` and its field pointing there."""
    changes = {}
    for name, (file_name, data) in packed.items():
        target = folder / name / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        changes[name] = str(target)
    return job.with_request(**changes) if changes else job


def restore_inputs(plan, job):
    """`plan` (made from the unpacked job) with the input paths the job file gave put back, so parameters,
    sidecars and embedded metadata record what the local engine records."""
    original = {name: getattr(job.request, name) for name in INPUT_FIELDS if getattr(job.request, name, None)}
    return replace(plan, job=plan.job.with_request(**original)) if original else plan
