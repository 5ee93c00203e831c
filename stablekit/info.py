"""What made a file, read without loading any model: stablekit's own record (embedded in the file, or its
JSON sidecar where the format holds none) or a foreign one (AUTOMATIC1111 parameters, ComfyUI graphs).

The readers are tolerant: a record that is missing, damaged or of another tool's making is skipped, never
fatal, so the next place to look still gets its chance.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import StablekitError, UsageError

_IMAGE = (".png", ".jpg", ".jpeg", ".webp", ".gif")
_AUDIO = (".wav", ".flac", ".ogg")
_VIDEO = (".mp4", ".mov", ".m4v", ".mkv")
_EXIF_IFD, _USER_COMMENT, _IMAGE_DESCRIPTION = 0x8769, 0x9286, 0x010E
# Parameter keys that say which output of a job this is, and how many the job made.
_COUNTS = {"image": "num_images", "audio": "num_waveforms_per_prompt"}


class NoRecordError(StablekitError):
    """The file carries no record stablekit can read (exit 1)."""


@dataclass
class FileRecord:
    """Everything found about one file: stablekit's parameters, its sidecar, and any foreign records."""

    path: Path
    parameters: dict[str, Any] | None = None  # stablekit's job object plus details
    source: str | None = None  # where `parameters` were read
    sidecar: dict[str, Any] | None = None  # the whole JSON sidecar, when there is one
    a1111: str | None = None  # AUTOMATIC1111 `parameters` text
    a1111_source: str | None = None
    comfyui: dict[str, Any] = field(default_factory=dict)  # chunk name -> graph

    @property
    def found(self) -> bool:
        return bool(self.parameters or self.a1111 or self.comfyui)


def read_record(path: str | Path) -> FileRecord:
    """Every record `path` carries; NoRecordError when there is none at all."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    record = FileRecord(path)
    embedded = _embedded(path, record)
    if embedded is not None:
        record.parameters, record.source = embedded
    sidecar = _json_file(path.with_name(path.name + ".json"))
    if isinstance(sidecar, dict) and isinstance(sidecar.get("parameters"), dict):
        record.sidecar = sidecar
        if record.parameters is None:
            record.parameters, record.source = sidecar["parameters"], f"sidecar {path.name}.json"
    if not record.found:
        raise NoRecordError(f"{path}: no generation record (nothing embedded, no {path.name}.json sidecar)",
                            hint="stablekit, AUTOMATIC1111 and ComfyUI records are read; this file has none")
    return record


def job_of(record: FileRecord) -> tuple[Any, list[str]]:
    """The job that made the file (stablekit's own), or the nearest job an A1111 record gives, with the A1111
    fields stablekit has no counterpart for."""
    from .foreign import a1111_values, parse_a1111
    from .jobs import job_from, job_from_record

    where = f"{record.path.name}"
    if record.parameters is not None:
        return job_from_record(original_parameters(record), where), []
    if record.a1111 is not None:
        values, unmapped = a1111_values(parse_a1111(record.a1111))
        return job_from("image", values, where=f"{where}: A1111 parameters"), unmapped
    raise NoRecordError(f"{record.path}: holds a ComfyUI graph, which stablekit shows but does not turn into a job",
                        hint=f"see `stablekit info {record.path}`")


def original_parameters(record: FileRecord) -> dict[str, Any]:
    """The parameters of the job that made the file: with several outputs (images, waveforms) the sidecar's
    per-output seed is taken back to the job's first seed, and the job's count restored."""
    parameters = dict(_best_parameters(record))
    loras = parameters.get("loras")
    if isinstance(loras, list):  # embedded images hold the LoRA details (dicts), and [] for none
        parameters["loras"] = [f"{item['source']}:{item['scale']:g}" if isinstance(item, dict) else item
                               for item in loras] or None
    index = parameters.get("index")
    if isinstance(index, int) and isinstance(parameters.get("seed"), int) and parameters.get("command") in _COUNTS:
        parameters["seed"] = (parameters["seed"] - index) % 2**32
    return parameters


def _best_parameters(record: FileRecord) -> dict[str, Any]:
    """The sidecar's parameters when it belongs to this file (they are complete), else the embedded ones."""
    assert record.parameters is not None
    sidecar = record.sidecar
    if sidecar and sidecar.get("output") in (record.path.name, None):
        return sidecar["parameters"]
    return record.parameters


def _json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _stablekit_json(text: Any) -> dict[str, Any] | None:
    """A stablekit parameters object from embedded text, or None (another tool's JSON, or not JSON)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) and isinstance(data.get("command"), str) else None


def _embedded(path: Path, record: FileRecord) -> tuple[dict[str, Any], str] | None:
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            return _frames_folder(path)
        if suffix in _IMAGE:
            return _image(path, record)
        if suffix in _AUDIO:
            return _audio(path)
        if suffix in _VIDEO:
            return _video(path)
        if suffix == ".glb":
            return _glb(path)
    except (OSError, ValueError, SyntaxError, KeyError, IndexError, EOFError, RuntimeError):
        return None  # a damaged container: the sidecar may still tell
    return None


def _image(path: Path, record: FileRecord) -> tuple[dict[str, Any], str] | None:
    """PNG text chunks; EXIF ImageDescription and UserComment (JPEG, WebP); the GIF comment."""
    from PIL import Image

    with Image.open(path) as image:
        info = dict(image.info)
        exif = image.getexif()
        description = exif.get(_IMAGE_DESCRIPTION)
        comment = exif.get_ifd(_EXIF_IFD).get(_USER_COMMENT)
    kind = path.suffix.lower().lstrip(".").upper().replace("JPG", "JPEG")
    for name in ("prompt", "workflow"):
        if isinstance(info.get(name), str):
            try:
                record.comfyui[name] = json.loads(info[name])
            except json.JSONDecodeError:
                pass
    a1111 = info.get("parameters")
    if isinstance(a1111, str):
        record.a1111, record.a1111_source = a1111, f"{kind} text chunk 'parameters'"
    else:
        text = _user_comment(comment)
        if text:
            record.a1111, record.a1111_source = text, f"{kind} EXIF UserComment"
    for where, text in ((f"{kind} iTXt 'stablekit'", info.get("stablekit")),
                        (f"{kind} EXIF ImageDescription", description), (f"{kind} comment", info.get("comment"))):
        found = _stablekit_json(text)
        if found is not None:
            return found, where
    return None


def _user_comment(raw: Any) -> str | None:
    """EXIF UserComment: an 8-byte character code, then the text (A1111 writes UNICODE + UTF-16)."""
    if isinstance(raw, str):
        return raw or None
    if not isinstance(raw, bytes) or len(raw) < 8:
        return None
    code, body = raw[:8], raw[8:]
    if code.startswith(b"UNICODE"):
        # The byte order is not recorded: A1111 (piexif) writes big-endian, some tools little-endian.
        big, little = body.decode("utf-16-be", "replace"), body.decode("utf-16-le", "replace")
        text = big if sum(c.isprintable() for c in big) >= sum(c.isprintable() for c in little) else little
    else:
        text = body.decode("utf-8", "replace")
    return text.rstrip("\0") or None


def _audio(path: Path) -> tuple[dict[str, Any], str] | None:
    import soundfile

    with soundfile.SoundFile(path) as file:
        comment = file.comment
    found = _stablekit_json(comment)
    return (found, f"{path.suffix[1:].upper()} comment tag") if found else None


def _video(path: Path) -> tuple[dict[str, Any], str] | None:
    """The container's comment tag, read with the ffmpeg that imageio-ffmpeg ships (no ffprobe needed)."""
    from imageio_ffmpeg import get_ffmpeg_exe

    result = subprocess.run([get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                             "-f", "ffmetadata", "pipe:1"], capture_output=True, check=False, timeout=60)
    text = result.stdout.decode("utf-8", errors="replace")
    match = re.search(r"^comment=((?:\\[\s\S]|[^\\\n])*)$", text, re.M)
    found = _stablekit_json(re.sub(r"\\(.)", r"\1", match.group(1), flags=re.S)) if match else None
    return (found, f"{path.suffix[1:].upper()} comment tag") if found else None


def _glb(path: Path) -> tuple[dict[str, Any], str] | None:
    """The GLB's JSON chunk: stablekit's record sits in asset.extras."""
    with path.open("rb") as handle:
        header = handle.read(20)
        if header[:4] != b"glTF" or header[16:20] != b"JSON":
            return None
        tree = json.loads(handle.read(int.from_bytes(header[12:16], "little")))
    extras = tree.get("asset", {}).get("extras", {})
    found = extras.get("stablekit") if isinstance(extras, dict) else None
    if isinstance(found, dict) and isinstance(found.get("command"), str):
        return found, "GLB asset.extras"
    return None


def _frames_folder(folder: Path) -> tuple[dict[str, Any], str] | None:
    from PIL import Image

    first = next(iter(sorted(folder.glob("frame-*.png"))), None)
    if first is None:
        return None
    with Image.open(first) as image:
        found = _stablekit_json(image.info.get("stablekit"))
    return (found, f"{first.name} iTXt 'stablekit'") if found else None


def describe(record: FileRecord) -> list[str]:
    """The lines `stablekit info` prints for one file."""
    from .foreign import comfyui_inputs, comfyui_summary, parse_a1111

    lines = []
    if record.parameters is not None:
        p = _best_parameters(record)
        lines.append(f"{record.path}: stablekit {p.get('stablekit_version', '?')}, {p.get('command')} "
                     f"by {p.get('model')} (read from {record.source})")
        lines += [f"  {key}: {_show(value)}" for key, value in sorted(p.items())
                  if value not in (None, [], {}, "") and key not in ("command", "stablekit_version")]
        sidecar = record.sidecar
        if sidecar:
            lines += _provenance(sidecar)
        lines.append(f"  reproduce: stablekit reproduce {record.path} --verify")
    if record.a1111 is not None:
        found = parse_a1111(record.a1111)
        lines.append(f"{record.path}: AUTOMATIC1111 parameters (read from {record.a1111_source})")
        lines.append(f"  prompt: {_show(found.prompt)}")
        if found.negative_prompt:
            lines.append(f"  negative prompt: {_show(found.negative_prompt)}")
        lines += [f"  {key}: {value}" for key, value in found.fields.items()]
    for name, graph in record.comfyui.items():
        lines.append(f"{record.path}: ComfyUI {name} chunk ({comfyui_summary(name, graph)}; shown, not run)")
        if name == "prompt":
            lines += [f"  {node}: {_show(inputs)}" for node, inputs in comfyui_inputs(graph).items()]
    return lines


def _provenance(sidecar: dict[str, Any]) -> list[str]:
    model, plan, versions = sidecar.get("model") or {}, sidecar.get("device_plan") or {}, sidecar.get("versions") or {}
    lines = []
    if model.get("repo"):
        lines.append(f"  model files: {model['repo']}@{model.get('revision')} ({model.get('snapshot')})")
    elif model.get("snapshot"):
        lines.append(f"  model files: {model['snapshot']}")
    if plan:
        lines.append(f"  device plan: {plan.get('device')}, {plan.get('dtype')}, offload {plan.get('offload')}")
    if versions:
        lines.append("  versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    if sidecar.get("lockfile"):
        lines.append(f"  lockfile: {sidecar['lockfile']}")
    if sidecar.get("created"):
        lines.append(f"  created: {sidecar['created']}")
    return lines


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 300 else text[:297] + "..."


def report(paths: list[str], *, as_json: bool, result, warn) -> None:
    """`stablekit info`: each file's record (or its job object with `as_json`), every file tried before a
    failure is raised, so one file without a record does not hide the others."""
    failures: list[StablekitError] = []
    for path in paths:
        try:
            record = read_record(path)
            if not as_json:
                for line in describe(record):
                    result(line)
                continue
            job, unmapped = job_of(record)
            result(job.to_dict())
            if unmapped:
                warn(f"{path}: A1111 fields with no stablekit counterpart: {'; '.join(unmapped)}")
        except StablekitError as err:  # a missing file too: the others are still shown
            failures.append(err)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        for err in failures:
            warn(err.message)
        raise NoRecordError(f"{len(failures)} of {len(paths)} files have no record stablekit can read")
