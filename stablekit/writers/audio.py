"""WAV, FLAC and OGG Vorbis through soundfile, with one stated rule for peaks beyond full scale.

The rule: by default a clip whose peak exceeds full scale is scaled down as a whole until its peak is full
scale (a clip within full scale is left untouched); `normalize=False` clips the samples beyond full scale
instead. Either way no sample is ever written beyond full scale, so integer formats never wrap. Vorbis
(.ogg) is lossy and its decoded waveform can overshoot what was encoded, so with normalisation an OGG file
is decoded after encoding and re-encoded with less gain until it reads back within full scale.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from ..errors import OutputError, UsageError
from ..outputs import write_atomic

EXTENSIONS = (".wav", ".flac", ".ogg")
DEFAULT_BIT_DEPTH = "16"
_CONTAINERS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
_SUBTYPES = {
    ".wav": {"16": "PCM_16", "24": "PCM_24", "32f": "FLOAT"},
    ".flac": {"16": "PCM_16", "24": "PCM_24"},
    ".ogg": {None: "VORBIS"},
}
_TAGS = ("title", "comment", "software")
_WAV_TAG_BYTES = 2000  # libsndfile drops a RIFF INFO string of about 2 KiB or more (and the ones after it)
_OGG_HEADROOM = 0.99  # each re-encode aims this far below full scale
_OGG_TRIES = 8
# libvorbis allocates its analysis buffer on the stack: one write of a long clip (47 s of stereo at
# 44.1 kHz) overflows it and crashes the process (libsndfile issue 1095). Small writes keep it short.
_CHUNK_FRAMES = 16384


@dataclass(frozen=True)
class AudioFormat:
    """Container and sample format, chosen from the file extension and --bit-depth."""

    extension: str = ".wav"
    bit_depth: str | None = DEFAULT_BIT_DEPTH  # None for Vorbis, which has none
    normalize: bool = True

    @property
    def container(self) -> str:
        return _CONTAINERS[self.extension]

    @property
    def subtype(self) -> str:
        return _SUBTYPES[self.extension][self.bit_depth]


def audio_format(extension: str, bit_depth: str | None = None, normalize: bool = True) -> AudioFormat:
    """Check an extension / bit depth pair (`bit_depth` None: the format's default); UsageError if unsupported."""
    extension = extension.lower()
    if extension not in _CONTAINERS:
        raise UsageError(f"'{extension}' is not an audio format stablekit writes", hint=f"use {', '.join(EXTENSIONS)}")
    if extension == ".ogg":
        if bit_depth is not None:
            raise UsageError(f"--bit-depth {bit_depth}: .ogg (Vorbis) is lossy and has no bit depth",
                             hint="drop --bit-depth, or write .wav or .flac")
        return AudioFormat(extension, None, normalize)
    bit_depth = bit_depth or DEFAULT_BIT_DEPTH
    if bit_depth not in _SUBTYPES[extension]:
        choices = " or ".join(_SUBTYPES[extension])
        raise UsageError(f"--bit-depth {bit_depth}: {extension} holds {choices} bit samples",
                         hint="use .wav for 32-bit float" if bit_depth == "32f" else f"use {choices}")
    return AudioFormat(extension, bit_depth, normalize)


@dataclass(frozen=True)
class Level:
    """What the full-scale rule did: the clip's peak before (1.0 = full scale), the gain and clipped samples."""

    peak: float
    gain_db: float = 0.0
    clipped: int = 0

    def to_dict(self) -> dict[str, float | int | None]:
        peak_dbfs = round(20 * math.log10(self.peak), 2) if self.peak > 0 else None
        return {"model_peak_dbfs": peak_dbfs, "gain_db": round(self.gain_db, 2), "clipped_samples": self.clipped}


def fit_full_scale(samples, normalize: bool = True) -> tuple[np.ndarray, Level]:
    """Float32 samples within [-1, 1]: scaled down as a whole (normalize) or clipped; quiet clips untouched."""
    data = np.asarray(samples, dtype=np.float64)
    if not np.isfinite(data).all():
        raise OutputError("the audio has NaN or infinite samples; nothing written")
    peak = float(np.abs(data).max()) if data.size else 0.0
    if peak <= 1.0:
        return data.astype(np.float32), Level(peak)
    if normalize:
        return np.clip(data / peak, -1.0, 1.0).astype(np.float32), Level(peak, gain_db=-20 * math.log10(peak))
    clipped = int(np.count_nonzero(np.abs(data) > 1.0))
    return np.clip(data, -1.0, 1.0).astype(np.float32), Level(peak, clipped=clipped)


def _fit_tags(tags: dict[str, str], extension: str) -> dict[str, str]:
    """RIFF INFO strings are short: a long title is cut, a long comment points to the sidecar instead."""
    if extension != ".wav":
        return tags
    fitted = {}
    for key, text in tags.items():
        if len(text.encode()) < _WAV_TAG_BYTES:
            fitted[key] = text
        elif key == "comment":
            fitted[key] = "parameters: see the .json sidecar (too long for a WAV tag)"
        else:
            fitted[key] = text.encode()[:_WAV_TAG_BYTES - 4].decode(errors="ignore") + "..."
    return fitted


def _encode(samples: np.ndarray, sample_rate: int, fmt: AudioFormat, tags: dict[str, str]) -> bytes:
    """The encoded file, in memory: libsndfile reports a full disk only as "System error.", so the bytes are
    written to disk by Python, whose OSError says what went wrong."""
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", samplerate=sample_rate, channels=samples.shape[1], format=fmt.container,
                      subtype=fmt.subtype) as file:
        for key, text in tags.items():  # before the samples: FLAC and Vorbis write their tags first
            setattr(file, key, text)
        for start in range(0, len(samples), _CHUNK_FRAMES):
            file.write(samples[start:start + _CHUNK_FRAMES])
    return buffer.getvalue()


def _decoded(encoded: bytes) -> tuple[float, int]:
    data, _ = sf.read(io.BytesIO(encoded), dtype="float64", always_2d=True)
    return (float(np.abs(data).max()) if data.size else 0.0), len(data)


def write_audio(samples, sample_rate: int, path: Path, fmt: AudioFormat = AudioFormat(), *,
                tags: dict[str, str] | None = None, overwrite: bool = False) -> tuple[Path, Level]:
    """Write `samples` (frames x channels, float, 1.0 = full scale); returns the path written and the levelling.

    No timestamps go in, so the same samples and tags give the same bytes (OGG aside: libsndfile draws each
    Vorbis stream's serial number at random; the decoded samples are the same).
    """
    data = np.asarray(samples)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] == 0:
        raise OutputError(f"cannot write {path.name}: expected frames x channels samples, got shape {data.shape}")
    fitted, level = fit_full_scale(data, fmt.normalize)
    tags = _fit_tags({k: v for k, v in (tags or {}).items() if k in _TAGS and v}, fmt.extension)
    outcome = {"level": level}

    def write(tmp: Path) -> None:
        if fmt.extension != ".ogg":
            tmp.write_bytes(_encode(fitted, sample_rate, fmt, tags))
            return
        gain = 1.0
        for _ in range(_OGG_TRIES):
            encoded = _encode(fitted * gain if gain != 1.0 else fitted, sample_rate, fmt, tags)
            peak, frames = _decoded(encoded)
            if frames != len(fitted):
                raise OutputError(f"{path.name}: Vorbis wrote {frames} frames, expected {len(fitted)}")
            if peak <= 1.0 or not fmt.normalize:
                break
            gain *= _OGG_HEADROOM / peak
        else:
            raise OutputError(f"{path.name}: the Vorbis encoding still overshoots full scale after "
                              f"{_OGG_TRIES} tries", hint="write .wav or .flac")
        tmp.write_bytes(encoded)
        if gain != 1.0:
            outcome["level"] = Level(level.peak, level.gain_db + 20 * math.log10(gain), level.clipped)

    try:
        written = write_atomic(path, write, overwrite=overwrite)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise OutputError(f"cannot write {path.name}: {err}") from None
    return written, outcome["level"]
