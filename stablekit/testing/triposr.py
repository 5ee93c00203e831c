"""A tiny random-weight TripoSR in the stabilityai/TripoSR layout (config.yaml + weights), shaped to give a blob."""

from __future__ import annotations

import json
import pathlib

# stabilityai/TripoSR's config.yaml with reduced numbers (GroupNorm keeps its 32 groups, so 32 channels).
_TRIPOSR_YAML = """\
cond_image_size: 64

image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: "vit_config.json" # the release names facebook/dino-vitb16

tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: 8
  num_channels: 32

backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${tokenizer.num_channels}
  num_attention_heads: 2
  attention_head_dim: 16
  num_layers: 2
  cross_attention_dim: 32

post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: 32
  out_channels: 8

decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: 24 # 3 * 8
  n_neurons: 16
  n_hidden_layers: 3
  activation: silu

renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: 0.87 # slightly larger than 0.5 * sqrt(3)
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: 128
"""
_TRIPOSR_VIT = {"architectures": ["ViTModel"], "hidden_act": "gelu", "hidden_size": 32, "image_size": 32,
                "intermediate_size": 64, "layer_norm_eps": 1e-12, "model_type": "vit", "num_attention_heads": 4,
                "num_channels": 3, "num_hidden_layers": 2, "patch_size": 8, "qkv_bias": True}


def build_triposr(path: pathlib.Path) -> None:
    """stabilityai/TripoSR layout (config.yaml, weights as model.safetensors): 64px input, 16x16 triplanes.

    Random weights drawn to keep the density smooth, then the decoder's last layer is set so that about a third
    of the space lies above the iso-level for any input: every image gives a (random-looking) closed blob.
    """
    import math

    import torch
    from safetensors.torch import save_file

    from ..models.triposr import build, load_config
    from ..models.triposr.isosurface import THRESHOLD, grid_axis, grid_points

    (path / "config.yaml").write_text(_TRIPOSR_YAML, encoding="utf-8")
    (path / "vit_config.json").write_text(json.dumps(_TRIPOSR_VIT, indent=2) + "\n", encoding="utf-8")
    model = build(load_config(path), device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name == "tokenizer.embeddings":  # smooth planes: a 3x3 field per channel, enlarged
                coarse = torch.randn(3 * param.shape[1], 1, 3, 3, generator=generator)
                smooth = torch.nn.functional.interpolate(coarse, size=param.shape[-2:], mode="bicubic")
                param.copy_((smooth.view(param.shape) + 0.05 * noise) / param.shape[1] ** 0.5)
            elif name.endswith(("cls_token", "position_embeddings")):
                param.copy_(0.5 * noise)
            elif param.ndim == 1 and "norm" in name:
                param.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
            elif param.ndim == 1:
                param.copy_(0.1 * noise)
            elif "upsample" in name:  # one kernel shared by the four sub-pixels, so upsampling stays smooth
                param.copy_((noise[..., :1, :1] + 0.3 * noise) / param.shape[0] ** 0.5)
            else:  # 1 / sqrt(fan_in); the backbone's output small, so the smooth planes dominate
                param.copy_(noise / param[0].numel() ** 0.5 * (0.2 if "proj_out" in name else 1.0))
        last = model.decoder.layers[-1]
        codes = model(torch.rand(3, 3, 64, 64, generator=generator))  # three noise images
        points = grid_points(grid_axis(24, model.config.renderer.radius), 0, 24**3)
        raw = torch.cat([model.query.raw(code, points) for code in codes]) - last.bias  # (N, 4) without bias
        scale = 1.5 / raw.std(dim=0)  # density and colour logits with std 1.5 over space
        last.weight.mul_(scale[:, None])
        last.bias[1:] = 0.0
        iso = math.log(THRESHOLD) - model.config.renderer.density_bias
        last.bias[0] = iso - torch.quantile(raw[:, 0] * scale[0], 0.67)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors")

