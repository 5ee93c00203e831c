"""What differs between model families, in one table: no `if spec.family == ...` anywhere else.

A catalog record names its family; adding a diffusers family or a fine-tune is a catalog record (and, for
a new family, one row here). Loader classes, defaults and memory figures live in the records themselves.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    schedulers: str | None = None  # "ddpm": the classic samplers; "flow": flow matching (SD3); None: not a choice
    refiner: bool = False  # its text-to-image can hand over to the SDXL refiner
    fp16_vae: str | None = None  # the record of a VAE that stays finite in fp16 (the stock one overflows)
    safety_checker: bool = False  # its pipeline carries a safety checker (switched off: the user decides)
    checkpoint_marker: str | None = None  # a tensor-name prefix found only in its single-file checkpoints
    checkpoint_configs: str | None = None  # the record whose repository provides configs for such a checkpoint
    tiny_decoder: str | None = None  # the record of its tiny autoencoder (TAESD), a fast approximate decoder
    full_precision: bool = False  # runs in fp32 whatever the device supports (TripoSR's density threshold)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("sd15", schedulers="ddpm", safety_checker=True, checkpoint_marker="cond_stage_model.transformer.",
           checkpoint_configs="sd15", tiny_decoder="taesd"),
    Family("sd21", schedulers="ddpm", safety_checker=True, checkpoint_marker="cond_stage_model.model.transformer.",
           checkpoint_configs="sd21", tiny_decoder="taesd"),
    Family("sdxl", schedulers="ddpm", refiner=True, fp16_vae="sdxl-vae-fp16-fix",
           checkpoint_marker="conditioner.embedders.1.model.", checkpoint_configs="sdxl", tiny_decoder="taesdxl"),
    Family("sd3", schedulers="flow", checkpoint_marker="model.diffusion_model.joint_blocks.",
           checkpoint_configs="sd3-medium", tiny_decoder="taesd3"),
    Family("svd"),
    Family("stable-audio"),
    Family("stablelm"),
    Family("triposr", full_precision=True),
    Family("vae"),
)}
# Single-file checkpoints: the marker of a later family contains no earlier one's, so check in this order.
CHECKPOINT_ORDER = ("sd3", "sdxl", "sd21", "sd15")


def family(name: str) -> Family:
    """The row for a family name; a family this table does not know behaves as the plainest one."""
    return FAMILIES.get(name) or Family(name)
