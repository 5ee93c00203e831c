"""Verdicts on a reproduction: identical bytes, identical decoded content, or how far apart the two are
(largest difference and PSNR for pixels, max sample difference for audio, Hausdorff distance for meshes,
the first differing token for text), and which recorded facts explain a difference."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STILL = (".png", ".jpg", ".jpeg")
_MOVING = (".mp4", ".gif", ".mov", ".mkv", ".m4v")
_AUDIO = (".wav", ".flac", ".ogg")
_MESH = (".glb", ".obj", ".ply", ".stl")
# Libraries whose version can change the numbers; python's own cannot.
_LIBRARIES = ("stablekit", "torch", "diffusers", "transformers", "accelerate", "safetensors")


@dataclass
class Verdict:
    """How a reproduction compares with the original; `identical` decides the exit code."""

    identical: bool
    summary: str  # one line: "identical bytes", "identical pixels (metadata differs)", "differs: ..."
    measures: dict[str, Any] = field(default_factory=dict)
    expected: list[str] = field(default_factory=list)  # recorded facts that differ here: why it may differ

    def to_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "verdict": self.summary, **self.measures, "expected": self.expected}

    def lines(self) -> list[str]:
        out = [self.summary]
        if self.expected and not self.identical:
            out.append("differs, expected because " + "; ".join(self.expected))
        elif self.expected:
            out.append("note: " + "; ".join(self.expected))
        return out


def compare(original: Path, copy: Path, tokenize: Callable[[str], list[str]] | None = None) -> Verdict:
    """Compare two outputs of the same format: bytes first, then what they decode to. `tokenize` splits a
    text output into the model's tokens (the first differing token is named); without it, into words."""
    if _same_bytes(original, copy):
        return Verdict(True, "identical bytes")
    suffix = original.suffix.lower()
    if original.is_dir():
        return _pixels(_frames_folder(original), _frames_folder(copy), "frames")
    if suffix in _STILL or (suffix == ".webp" and not _animated(original)):
        return _pixels(_image(original)[None], _image(copy)[None], "pixels")
    if suffix in _MOVING or suffix == ".webp":
        return _pixels(_video(original), _video(copy), "frames")
    if suffix in _AUDIO:
        return _samples(original, copy)
    if suffix in _MESH:
        return _mesh(original, copy)
    return _text(original.read_text(encoding="utf-8", errors="replace"),
                 copy.read_text(encoding="utf-8", errors="replace"), tokenize)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.is_dir() or b.is_dir():
        if not (a.is_dir() and b.is_dir()):
            return False
        names = sorted(p.name for p in a.iterdir())
        return names == sorted(p.name for p in b.iterdir()) and all(
            (a / n).read_bytes() == (b / n).read_bytes() for n in names)
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _animated(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return getattr(image, "n_frames", 1) > 1


def _image(path: Path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _video(path: Path):
    import imageio.v3 as iio
    import numpy as np

    return np.asarray(iio.imread(path, index=None))[..., :3]


def _frames_folder(folder: Path):
    import numpy as np

    return np.stack([_image(p) for p in sorted(folder.glob("frame-*.png"))])


def _pixels(a, b, what: str) -> Verdict:
    import numpy as np

    if a.shape != b.shape:
        return Verdict(False, f"differs: {what} of shape {b.shape}, the original's are {a.shape}",
                       {"shape": list(b.shape), "original_shape": list(a.shape)})
    if np.array_equal(a, b):
        return Verdict(True, f"identical {what} (the file's bytes differ: metadata or encoding)")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    psnr = 10 * math.log10(255.0**2 / mse)
    frames = int(np.count_nonzero(diff.reshape(len(diff), -1).max(axis=1))) if len(diff) > 1 else None
    where = f" in {frames} of {len(diff)} frames" if frames is not None else ""
    return Verdict(False, f"differs: largest {what[:-1]} difference {int(diff.max())}/255{where}, "
                          f"PSNR {psnr:.1f} dB", {"max_difference": int(diff.max()), "psnr_db": round(psnr, 2)})


def _samples(a_path: Path, b_path: Path) -> Verdict:
    import numpy as np
    import soundfile

    a, rate_a = soundfile.read(a_path, dtype="float64", always_2d=True)
    b, rate_b = soundfile.read(b_path, dtype="float64", always_2d=True)
    if a.shape != b.shape or rate_a != rate_b:
        return Verdict(False, f"differs: {len(b)} frames x {b.shape[1]} at {rate_b} Hz, the original has "
                              f"{len(a)} x {a.shape[1]} at {rate_a} Hz")
    if np.array_equal(a, b):
        return Verdict(True, "identical samples (the file's bytes differ: metadata or encoding)")
    worst = float(np.abs(a - b).max())
    dbfs = 20 * math.log10(worst)
    return Verdict(False, f"differs: max sample difference {worst:.3g} ({dbfs:.1f} dBFS)",
                   {"max_sample_difference": worst, "max_difference_dbfs": round(dbfs, 2)})


def _load_mesh(path: Path):
    import trimesh

    return trimesh.load(path, force="mesh", process=False)


def _mesh(a_path: Path, b_path: Path) -> Verdict:
    import numpy as np

    a, b = _load_mesh(a_path), _load_mesh(b_path)
    va, vb = np.asarray(a.vertices), np.asarray(b.vertices)
    if va.shape == vb.shape and np.array_equal(va, vb) and np.array_equal(np.asarray(a.faces), np.asarray(b.faces)):
        return Verdict(True, "identical vertices and faces (the file's bytes differ: metadata or encoding)")
    distance = hausdorff(va, vb)
    return Verdict(False, f"differs: Hausdorff distance {distance:.3g} between the vertex sets "
                          f"({len(vb)} vertices, the original has {len(va)})",
                   {"hausdorff": distance, "vertices": len(vb), "original_vertices": len(va)})


def hausdorff(a, b) -> float:
    """Symmetric Hausdorff distance between two point sets (scipy's k-d tree when present, else in chunks)."""
    import numpy as np

    if len(a) == 0 or len(b) == 0:
        return math.inf if len(a) != len(b) else 0.0
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        def nearest(p, q):
            return max(float(np.sqrt(((p[i:i + 512, None] - q[None]) ** 2).sum(-1)).min(1).max())
                       for i in range(0, len(p), 512))
    else:
        def nearest(p, q):
            return float(cKDTree(q).query(p)[0].max())
    return max(nearest(a, b), nearest(b, a))


def _text(a: str, b: str, tokenize: Callable[[str], list[str]] | None = None) -> Verdict:
    if a == b:
        return Verdict(True, "identical text")
    unit = "token" if tokenize else "word"
    parts_a, parts_b = (tokenize(a), tokenize(b)) if tokenize else (_words(a), _words(b))
    offset = 0
    for number, (x, y) in enumerate(zip(parts_a, parts_b, strict=False)):
        if x != y:
            return Verdict(False, f"differs: first differing {unit} is {unit} {number + 1}, at character {offset}: "
                                  f"{y!r}, the original has {x!r}",
                           {"first_difference": offset, f"first_differing_{unit}": number + 1})
        offset += len(x)
    longer = "the reproduction" if len(parts_b) > len(parts_a) else "the original"
    return Verdict(False, f"differs: {longer} goes on after {unit} {min(len(parts_a), len(parts_b))} (character "
                          f"{offset})", {"first_difference": offset})


def _words(text: str) -> list[str]:
    return re.findall(r"\s+|\S+", text)


def explain(original: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """Which recorded facts differ between the original's sidecar and the reproduction's: device, dtype,
    library versions, model revision. Each one can change the numbers."""
    if not original:
        return ["the original has no sidecar, so its device, dtype and library versions are unknown"]
    new = new or {}
    found = []
    plan_a, plan_b = original.get("device_plan") or {}, new.get("device_plan") or {}
    for key in ("device", "dtype"):
        if plan_a.get(key) and plan_a.get(key) != plan_b.get(key):
            found.append(f"{key} {plan_b.get(key)} here, {plan_a.get(key)} in the record")
    versions_a, versions_b = original.get("versions") or {}, new.get("versions") or {}
    for name in _LIBRARIES:
        if name in versions_a and versions_a[name] != versions_b.get(name):
            found.append(f"{name} {versions_b.get(name, 'not installed')} here, {versions_a[name]} in the record")
    model_a, model_b = original.get("model") or {}, new.get("model") or {}
    revision_a, revision_b = _revision(model_a), _revision(model_b)
    if revision_a and revision_a != revision_b:
        found.append(f"model revision {revision_b} here, {revision_a} in the record")
    return found


def _revision(model: dict[str, Any]) -> str | None:
    """The commit a hub snapshot folder is named after, else the record's revision."""
    snapshot = Path(str(model.get("snapshot") or ""))
    if snapshot.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", snapshot.name):
        return snapshot.name[:12]
    return model.get("revision") if model.get("repo") else None
