"""What this CPU computes natively: whether bfloat16 maths runs in hardware (AVX512_BF16 or AMX on x86, Arm BF16).

On such CPUs bfloat16 halves the memory traffic and runs the matrix multiplications in hardware, so the planner
picks it by default; elsewhere bfloat16 is emulated (converted to fp32 and back) and float32 stays the default.
Read from /proc/cpuinfo on Linux and sysctl on macOS: no torch import, so planning stays cheap.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Flags (as Linux spells them) that mean bf16 dot products in hardware; amx_bf16 implies AMX tiles.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # "bf16": the Arm (aarch64) feature in /proc/cpuinfo
_MACOS_SYSCTL = "hw.optional.arm.FEAT_BF16"


@dataclass(frozen=True)
class CpuFeatures:
    flags: frozenset[str]
    source: str  # where the flags were read, for the plan's reason

    @property
    def bf16_flags(self) -> tuple[str, ...]:
        return tuple(flag for flag in BF16_FLAGS if flag in self.flags)

    @property
    def native_bf16(self) -> bool:
        return bool(self.bf16_flags)


def parse_cpuinfo(text: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text (x86 `flags`, Arm `Features`)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def read(cpuinfo: Path | None = None, platform: str | None = None) -> CpuFeatures:
    """This machine's CPU features; an unreadable source gives none (float32 stays the default)."""
    platform = platform or sys.platform
    if platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", _MACOS_SYSCTL], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        return CpuFeatures(frozenset({"bf16"}) if out.strip() == "1" else frozenset(), f"sysctl {_MACOS_SYSCTL}")
    path = cpuinfo or CPUINFO
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return CpuFeatures(frozenset(), f"{path} (unreadable)")
    return CpuFeatures(parse_cpuinfo(text), str(path))


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 in hardware (what probe() records as Hardware.cpu_bf16)."""
    return read().native_bf16
