"""Video files and frame folders: MP4 (H.264), animated GIF and WebP, or a folder of numbered PNG frames.

The rules, written once:
- Format by extension: .mp4, .gif, .webp; a name without an extension is a folder of PNG frames named
  frame-0000.png, frame-0001.png ... (four digits, more when there are 10 000 frames or more).
- MP4 is H.264 in yuv420p (what every player opens), colours tagged BT.709, encoded by the ffmpeg that
  imageio-ffmpeg ships. yuv420p needs an even width and height; any even size is kept exact (H.264 pads to
  its 16-pixel macroblocks inside the stream and crops them on playback; nothing is ever rescaled). An odd
  width or height, which stablekit itself never makes (its sizes are multiples of 8), gets one column or row
  repeating the edge pixels on the right or bottom, and `VideoFile.padded` says so.
- GIF frame delays are hundredths of a second and WebP's thousandths: frame i is shown until
  round((i + 1) x unit / fps), so the clip's length stays right to the unit (7 fps in a GIF: 140 and 150 ms,
  averaging 7.0). Both encoders store a run of identical frames as one longer frame.
- Provenance: the parameters' JSON goes in the MP4's comment tag, the GIF's comment, the WebP's EXIF
  ImageDescription and each PNG frame's `stablekit` iTXt chunk.
- Files are written under a temporary name and renamed; a frames folder is written as a temporary sibling
  folder and renamed. Nothing existing is replaced without `overwrite` (a numbered name is chosen), and
  `overwrite` replaces only a folder that holds nothing but frames.
- When encoding fails, the frames are kept as a PNG folder beside the target (EncodingError.kept).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..outputs import StorageError, current_umask, storage_error, temporary_folder, write_atomic

EXTENSIONS = (".mp4", ".gif", ".webp")
FRAMES = "frames"  # the format name of a folder of PNG frames
GIF_MAX_FPS = 50  # players hold GIF delays under 2/100 s for 1/10 s
WEBP_MAX_FPS = 1000
CRF = 18  # x264's "visually lossless" end of the scale
_FRAME_NAME = re.compile(r"frame-\d{4,}\.png")
_IMAGE_DESCRIPTION = 0x010E
# RGB -> BT.709 limited-range YUV, tagged as such so players convert it back with the same matrix.
_COLOURS = ("scale=out_color_matrix=bt709:out_range=tv:flags=accurate_rnd+full_chroma_int,"
            "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv")


@dataclass(frozen=True)
class VideoFile:
    """What was written: the path, its format, frame count, stored size and fps, and any padding."""

    path: Path
    format: str  # mp4 gif webp frames
    frames: int
    width: int
    height: int
    fps: int
    padded: tuple[int, int] | None = None  # (columns, rows) added on the right / bottom


class EncodingError(OutputError):
    """The encoder failed; the frames were kept as PNGs in `kept` (None when even that failed)."""

    def __init__(self, message: str, hint: str | None = None, kept: Path | None = None) -> None:
        super().__init__(message, hint)
        self.kept = kept


def format_of(path: Path) -> str:
    """mp4, gif or webp by the extension; `frames` for a name without one."""
    suffix = path.suffix.lower()
    if not suffix:
        return FRAMES
    if suffix not in EXTENSIONS:
        raise OutputError(f"cannot write {path.name}: '{suffix}' is not a video format",
                          hint=f"use {', '.join(EXTENSIONS)}, or a name without an extension for PNG frames")
    return suffix[1:]


def frame_name(index: int, count: int) -> str:
    return f"frame-{index:0{max(4, len(str(count - 1)))}d}.png"


def delays(count: int, fps: float, unit: int) -> list[int]:
    """Per-frame delays in 1/unit s: frame i ends at round((i + 1) * unit / fps), so rounding never adds up."""
    ends = [round((i + 1) * unit / fps) for i in range(count)]
    return [end - start for start, end in zip([0, *ends], ends, strict=False)]


def _as_frames(frames) -> np.ndarray:
    data = np.asarray(frames)
    if data.ndim != 4 or data.shape[-1] != 3 or data.shape[0] == 0 or data.dtype != np.uint8:
        raise OutputError(f"expected frames x height x width x 3 uint8 pixels, got {data.dtype} {data.shape}")
    return np.ascontiguousarray(data)


def even_size(frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
    """yuv420p needs an even width and height: an odd one gets one edge-repeating column / row."""
    rows, columns = frames.shape[1] % 2, frames.shape[2] % 2
    if not rows and not columns:
        return frames, None
    return np.pad(frames, ((0, 0), (0, rows), (0, columns), (0, 0)), mode="edge"), (columns, rows)


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as err:
        raise OutputError(f"no ffmpeg to encode MP4 ({err})", hint="pip install imageio-ffmpeg") from None


def mp4_command(exe: str, tmp: Path, width: int, height: int, fps: int, comment: str | None) -> list[str]:
    metadata = ["-metadata", f"comment={comment}"] if comment else []
    return [exe, "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
            "-an", "-vf", _COLOURS, "-c:v", "libx264", "-preset", "medium", "-crf", str(CRF), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", *metadata, "-f", "mp4", str(tmp)]


def _encode_mp4(frames: np.ndarray, tmp: Path, fps: int, comment: str | None) -> None:
    command = mp4_command(ffmpeg_exe(), tmp, frames.shape[2], frames.shape[1], fps, comment)
    try:
        result = subprocess.run(command, input=frames.tobytes(), capture_output=True, check=False)
    except OSError as err:
        raise EncodingError(f"cannot run ffmpeg ({err.strerror})") from None
    if result.returncode != 0:
        text = result.stderr.decode(errors="replace")
        failed = next((number for number in _STORAGE_ERRNOS if os.strerror(number) in text), None)
        if failed is not None:  # ffmpeg met the file system, not a codec problem: said like any other write
            raise OSError(failed, os.strerror(failed))
        lines = text.strip().splitlines()
        reason = lines[-1] if lines else f"exit status {result.returncode}"
        raise EncodingError(f"ffmpeg failed: {reason}")


def _pil_frames(frames: np.ndarray) -> list:
    from PIL import Image

    return [Image.fromarray(frame) for frame in frames]


def _encode_gif(frames: np.ndarray, tmp: Path, fps: int, comment: str | None) -> None:
    first, *rest = _pil_frames(frames)
    extra = {"comment": comment.encode()} if comment else {}
    first.save(tmp, format="GIF", save_all=True, append_images=rest, loop=0, optimize=False,
               duration=[10 * d for d in delays(len(frames), fps, 100)], **extra)


def _encode_webp(frames: np.ndarray, tmp: Path, fps: int, comment: str | None) -> None:
    from .image import exif_block

    first, *rest = _pil_frames(frames)
    extra = {}
    if comment:
        # The EXIF chunk holds the TIFF structure itself (`MM\0*`), with no `Exif\0\0` before it.
        extra["exif"] = exif_block(description=comment, size=first.size)
    first.save(tmp, format="WEBP", save_all=True, append_images=rest, loop=0, quality=90, method=4,
               duration=delays(len(frames), fps, 1000), **extra)


_ENCODERS = {"mp4": _encode_mp4, "gif": _encode_gif, "webp": _encode_webp}
# Errors of the file system (ffmpeg reports them by their strerror text): no frames are kept beside the target.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


def write_video(frames, fps: int, path: Path, *, comment: str | None = None, overwrite: bool = False) -> VideoFile:
    """Write uint8 frames (count x height x width x 3) at `fps` in the format `path` names (see the module rules).

    If the encoder fails, the frames are written to a PNG folder beside `path` and EncodingError says where.
    """
    data = _as_frames(frames)
    fmt = format_of(path)
    if fps < 1:
        raise OutputError(f"cannot write {path.name}: fps {fps} must be at least 1")
    if fmt == FRAMES:
        folder = write_frames(data, path, comment=comment, overwrite=overwrite)
        return VideoFile(folder, FRAMES, len(data), data.shape[2], data.shape[1], fps)
    limit = {"gif": GIF_MAX_FPS, "webp": WEBP_MAX_FPS}.get(fmt)
    if limit and fps > limit:
        raise OutputError(f"cannot write {path.name}: {fmt.upper()} plays at most {limit} fps, asked for {fps}")
    stored, padded = even_size(data) if fmt == "mp4" else (data, None)
    encode = _ENCODERS[fmt]
    try:
        written = write_atomic(path, lambda tmp: encode(stored, tmp, fps, comment), overwrite=overwrite)
    except StorageError:
        raise  # a full or read-only disk takes no frames either
    except (OutputError, OSError, ValueError) as err:
        message = err.message if isinstance(err, OutputError) else f"{type(err).__name__}: {err}"
        raise _keep_frames(data, path, message, comment) from err
    return VideoFile(written, fmt, len(stored), stored.shape[2], stored.shape[1], fps, padded)


def _keep_frames(frames: np.ndarray, path: Path, reason: str, comment: str | None) -> EncodingError:
    """The encoder failed: save the frames as PNGs beside the target, and say where."""
    folder = path.with_name(f"{path.stem}-frames")
    try:
        kept = write_frames(frames, folder, comment=comment)
    except OutputError as err:
        return EncodingError(f"cannot write {path.name}: {reason}; keeping the frames failed too: {err.message}")
    hint = ("stablekit encodes MP4 with the ffmpeg of imageio-ffmpeg (IMAGEIO_FFMPEG_EXE names another); "
            "or write .gif or .webp") if path.suffix.lower() == ".mp4" else None
    return EncodingError(f"cannot write {path.name}: {reason}; the {len(frames)} frames are kept in {kept}",
                         hint=hint, kept=kept)


def is_frames_folder(folder: Path) -> bool:
    """A folder stablekit wrote: nothing in it but frame-NNNN.png files."""
    return folder.is_dir() and all(_FRAME_NAME.fullmatch(entry.name) for entry in folder.iterdir())


def write_frames(frames, folder: Path, *, comment: str | None = None, overwrite: bool = False) -> Path:
    """Write the frames as numbered PNGs into a temporary sibling folder, then rename it to `folder`.

    Without `overwrite` an existing name is kept and the next free numbered name is used (NAME-2 ...);
    with it, an existing frames folder is replaced, but never a folder holding anything else.
    """
    from PIL.PngImagePlugin import PngInfo

    data = _as_frames(frames)
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_folder(folder)
    except OSError as err:
        raise storage_error(err, folder) from None
    try:
        for index, frame in enumerate(_pil_frames(data)):
            info = PngInfo()
            if comment:
                info.add_itxt("stablekit", comment)
            info.add_text("frame", f"{index}/{len(data)}")
            frame.save(tmp / frame_name(index, len(data)), format="PNG", pnginfo=info)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700
        return _move_into_place(tmp, folder, overwrite)
    except OSError as err:
        raise storage_error(err, folder) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, folder: Path, overwrite: bool) -> Path:
    if overwrite and (folder.exists() or folder.is_symlink()):
        if folder.is_symlink() or not is_frames_folder(folder):
            raise OutputError(f"--overwrite replaces a folder of frames only: {folder} holds other files",
                              hint="choose another output name")
        trash = temporary_folder(folder, ".old")
        os.replace(folder, trash / folder.name)
        os.replace(tmp, folder)
        shutil.rmtree(trash, ignore_errors=True)
        return folder
    candidate, n = folder, 1
    while True:
        if not (candidate.exists() or candidate.is_symlink()):
            try:
                os.rename(tmp, candidate)
                return candidate
            except OSError:
                if not candidate.exists():
                    raise  # taken in the meantime: try the next name
        n += 1
        candidate = folder.with_name(f"{folder.name}-{n}")


def read_comment(path: Path) -> str | None:
    """The comment stored in a video file (MP4 tag, GIF comment, WebP EXIF description), or None."""
    fmt = format_of(path)
    if fmt == "mp4":
        result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
                                 "-f", "ffmetadata", "pipe:1"], capture_output=True, check=False)
        text = result.stdout.decode(errors="replace")
        found = re.search(r"^comment=((?:\\[\s\S]|[^\\\n])*)$", text, re.M)
        return re.sub(r"\\(.)", r"\1", found.group(1), flags=re.S) if found else None
    from PIL import Image

    with Image.open(path) as image:
        if fmt == "gif":
            comment = image.info.get("comment")
            return comment.decode() if isinstance(comment, bytes) else comment
        if fmt == "webp":
            return image.getexif().get(_IMAGE_DESCRIPTION)
    return None
