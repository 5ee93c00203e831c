"""Write a diffusers SD 1.x pipeline folder as one original-layout (LDM) .safetensors checkpoint.

The inverse of diffusers' single-file conversion, general in the number of blocks and layers so that the
tiny models convert too. Test helper: it lets the single-file loading path be tested without downloads.
"""

from __future__ import annotations

import json
from pathlib import Path

_RESNET = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
           ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]
_UNET_FIXED = [("time_embed.0.", "time_embedding.linear_1."), ("time_embed.2.", "time_embedding.linear_2."),
               ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."), ("out.2.", "conv_out.")]


def _unet_prefixes(config: dict) -> list[tuple[str, str]]:
    """(ldm prefix, diffusers prefix) pairs for every block of a UNet2DConditionModel config."""
    levels, layers = len(config["block_out_channels"]), config["layers_per_block"]
    down_attn = ["CrossAttn" in t for t in config["down_block_types"]]
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    pairs = list(_UNET_FIXED)
    for i in range(levels):
        for j in range(layers):
            ldm = f"input_blocks.{(layers + 1) * i + j + 1}."
            pairs.append((ldm + "0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn[i]:
                pairs.append((ldm + "1.", f"down_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            pairs.append((f"input_blocks.{(layers + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
        for j in range(layers + 1):
            ldm = f"output_blocks.{(layers + 1) * i + j}."
            pairs.append((ldm + "0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn[i]:
                pairs.append((ldm + "1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            ldm = f"output_blocks.{(layers + 1) * i + layers}.{2 if up_attn[i] else 1}."
            pairs.append((ldm, f"up_blocks.{i}.upsamplers.0."))
    pairs += [("middle_block.0.", "mid_block.resnets.0."), ("middle_block.1.", "mid_block.attentions.0."),
              ("middle_block.2.", "mid_block.resnets.1.")]
    return pairs


def _vae_prefixes(config: dict) -> list[tuple[str, str]]:
    levels, layers = len(config["block_out_channels"]), config["layers_per_block"]
    pairs = []
    for i in range(levels):
        for j in range(layers):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < levels - 1:
            pairs.append((f"encoder.down.{i}.downsample.", f"encoder.down_blocks.{i}.downsamplers.0."))
            pairs.append((f"decoder.up.{levels - 1 - i}.upsample.", f"decoder.up_blocks.{i}.upsamplers.0."))
        for j in range(layers + 1):
            pairs.append((f"decoder.up.{levels - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for part in ("encoder", "decoder"):
        for j in range(2):
            pairs.append((f"{part}.mid.block_{j + 1}.", f"{part}.mid_block.resnets.{j}."))
        pairs.append((f"{part}.mid.attn_1.", f"{part}.mid_block.attentions.0."))
    return pairs


def _rename(name: str, pairs: list[tuple[str, str]]) -> str:
    for ldm, hf in sorted(pairs, key=lambda p: -len(p[1])):
        if name.startswith(hf):
            return ldm + name[len(hf):]
    return name


def to_ldm_checkpoint(folder: Path, out: Path) -> Path:
    """folder: a diffusers StableDiffusionPipeline (fp32 safetensors); out: the single-file checkpoint."""
    from safetensors.torch import load_file, save_file

    tensors = {}
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    unet_pairs = _unet_prefixes(unet_config)
    for name, value in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        if ".resnets." in name:  # resnet layers are named differently; transformer blocks are not
            for ldm, hf in _RESNET:
                name = name.replace(f".{hf}.", f".{ldm}.")
        name = _rename(name, unet_pairs)
        tensors["model.diffusion_model." + name] = value
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    vae_pairs = _vae_prefixes(vae_config)
    attention = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    for name, value in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        name = _rename(name, vae_pairs).replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if ".attn_1." in name:
            for hf, ldm in attention.items():
                name = name.replace(f".attn_1.{hf}", f".attn_1.{ldm}")
            if value.ndim == 2:
                value = value[:, :, None, None]  # LDM's VAE attention is 1x1 convolutions
        tensors["first_stage_model." + name] = value
    for name, value in load_file(folder / "text_encoder" / "model.safetensors").items():
        name = name if name.startswith("text_model.") else "text_model." + name  # transformers 5 drops it
        tensors["cond_stage_model.transformer." + name] = value
    save_file({k: v.contiguous() for k, v in tensors.items()}, out)
    return out
