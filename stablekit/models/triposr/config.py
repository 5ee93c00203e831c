"""TripoSR's official `config.yaml` (and a reduced copy of it) read into typed, validated settings."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ...errors import StablekitError

# The classes the official config names; stablekit implements exactly these.
CLASSES = {
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}
DINO_VITB16 = "facebook/dino-vitb16"


class ConfigError(StablekitError):
    """A config.yaml (or the ViT config it names) that stablekit's TripoSR cannot build."""


@dataclass(frozen=True)
class ViTConfig:
    """The image tokenizer's ViT; the defaults are facebook/dino-vitb16 (its config.json, hard-coded)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 16
    image_size: int = 224
    num_channels: int = 3
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True
    hidden_act: str = "gelu"


@dataclass(frozen=True)
class TokenizerConfig:
    plane_size: int
    num_channels: int


@dataclass(frozen=True)
class BackboneConfig:
    in_channels: int
    num_attention_heads: int = 16
    attention_head_dim: int = 88
    num_layers: int = 1
    cross_attention_dim: int | None = None
    norm_num_groups: int = 32
    dropout: float = 0.0
    attention_bias: bool = False
    activation_fn: str = "geglu"
    only_cross_attention: bool = False
    double_self_attention: bool = False
    upcast_attention: bool = False
    norm_type: str = "layer_norm"
    norm_elementwise_affine: bool = True
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class PostProcessorConfig:
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: int
    n_neurons: int
    n_hidden_layers: int
    activation: str = "relu"
    bias: bool = True


@dataclass(frozen=True)
class RendererConfig:
    radius: float
    feature_reduction: str = "concat"
    density_activation: str = "trunc_exp"
    density_bias: float = -1.0
    color_activation: str = "sigmoid"
    num_samples_per_ray: int = 128
    randomized: bool = False


@dataclass(frozen=True)
class TripoSRConfig:
    cond_image_size: int
    image_tokenizer: ViTConfig
    tokenizer: TokenizerConfig
    backbone: BackboneConfig
    post_processor: PostProcessorConfig
    decoder: DecoderConfig
    renderer: RendererConfig


_INTERPOLATION = re.compile(r"\$\{([A-Za-z0-9_.]+)\}")


def _interpolate(value: Any, root: dict[str, Any], where: str) -> Any:
    """OmegaConf's `${a.b}` references, as the official file uses for backbone.in_channels."""
    if not isinstance(value, str):
        return value
    whole = _INTERPOLATION.fullmatch(value.strip())
    if not whole:
        return value
    node: Any = root
    for part in whole.group(1).split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"{where}: cannot resolve {value}")
        node = node[part]
    return _interpolate(node, root, where)


def _build(cls, raw: Any, root: dict[str, Any], where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    known = {f.name: f for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}.{key}: not a setting stablekit's TripoSR supports")
        values[key] = _interpolate(value, root, f"{where}.{key}")
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def _vit_config(name: str, folder: Path) -> ViTConfig:
    """The DINO ViT the config names: facebook/dino-vitb16 (hard-coded, no download) or a JSON file beside it."""
    if name == DINO_VITB16:
        return ViTConfig()
    path = folder / name
    if not path.is_file():
        raise ConfigError(f"image_tokenizer.pretrained_model_name_or_path: {name!r} is neither {DINO_VITB16} "
                          f"nor a ViT config.json beside config.yaml")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: not a readable JSON ViT config ({err})") from None
    known = {f.name for f in fields(ViTConfig)}
    return ViTConfig(**{k: v for k, v in data.items() if k in known})


def parse_config(data: dict[str, Any], folder: Path) -> TripoSRConfig:
    """Validate the parsed YAML and build the typed config (`folder` is where a named ViT JSON lives)."""
    if not isinstance(data, dict):
        raise ConfigError("config.yaml: expected a mapping at the top level")
    for key, expected in CLASSES.items():
        if data.get(key, expected) != expected:
            raise ConfigError(f"config.yaml: {key} is {data[key]!r}; stablekit implements {expected}")
    for key in ("cond_image_size", "image_tokenizer", "tokenizer", "backbone", "post_processor", "decoder",
                "renderer"):
        if key not in data:
            raise ConfigError(f"config.yaml: missing '{key}'")
    unknown = set(data) - {*CLASSES, "cond_image_size", "image_tokenizer", "tokenizer", "backbone",
                           "post_processor", "decoder", "renderer"}
    if unknown:
        raise ConfigError(f"config.yaml: unknown key '{sorted(unknown)[0]}'")
    vit_source = (data["image_tokenizer"] or {}).get("pretrained_model_name_or_path", DINO_VITB16)
    config = TripoSRConfig(
        cond_image_size=int(data["cond_image_size"]),
        image_tokenizer=_vit_config(str(vit_source), folder),
        tokenizer=_build(TokenizerConfig, data["tokenizer"], data, "tokenizer"),
        backbone=_build(BackboneConfig, data["backbone"], data, "backbone"),
        post_processor=_build(PostProcessorConfig, data["post_processor"], data, "post_processor"),
        decoder=_build(DecoderConfig, data["decoder"], data, "decoder"),
        renderer=_build(RendererConfig, data["renderer"], data, "renderer"),
    )
    check(config)
    return config


def check(config: TripoSRConfig) -> None:
    """Reject combinations the implementation does not cover (the official release uses none of them)."""
    b, r, d, v = config.backbone, config.renderer, config.decoder, config.image_tokenizer
    unsupported = [
        (b.activation_fn != "geglu", f"backbone.activation_fn {b.activation_fn!r} (only geglu)"),
        (b.norm_type != "layer_norm", f"backbone.norm_type {b.norm_type!r} (only layer_norm)"),
        (b.only_cross_attention or b.double_self_attention, "backbone only/double cross-attention"),
        (not b.norm_elementwise_affine, "backbone.norm_elementwise_affine false"),
        (r.feature_reduction not in ("concat", "mean"), f"renderer.feature_reduction {r.feature_reduction!r}"),
        (r.density_activation not in ("exp", "trunc_exp"), f"renderer.density_activation {r.density_activation!r}"),
        (r.color_activation != "sigmoid", f"renderer.color_activation {r.color_activation!r}"),
        (d.activation not in ("silu", "relu"), f"decoder.activation {d.activation!r}"),
        (v.hidden_act != "gelu", f"ViT hidden_act {v.hidden_act!r} (only gelu)"),
    ]
    for bad, what in unsupported:
        if bad:
            raise ConfigError(f"config.yaml: unsupported {what}")
    features = config.post_processor.out_channels * (3 if r.feature_reduction == "concat" else 1)
    sizes = [
        (b.in_channels == config.tokenizer.num_channels, "backbone.in_channels must equal tokenizer.num_channels"),
        (config.post_processor.in_channels == b.in_channels, "post_processor.in_channels must equal the backbone's"),
        (d.in_channels == features, f"decoder.in_channels must be {features} (post_processor.out_channels x planes)"),
        (b.in_channels % b.norm_num_groups == 0, "backbone.in_channels must be a multiple of norm_num_groups"),
        (b.cross_attention_dim in (None, v.hidden_size), "backbone.cross_attention_dim must be the ViT hidden size"),
        (v.hidden_size % v.num_attention_heads == 0, "ViT hidden_size must divide into its heads"),
        (config.cond_image_size % v.patch_size == 0, "cond_image_size must be a multiple of the ViT patch size"),
        (v.image_size >= v.patch_size, "ViT image_size must hold at least one patch"),
    ]
    for ok, what in sizes:
        if not ok:
            raise ConfigError(f"config.yaml: {what}")


def load_config(folder: str | Path) -> TripoSRConfig:
    """Read `folder/config.yaml` (pyyaml; the `${...}` references resolved like OmegaConf does)."""
    import yaml

    folder = Path(folder)
    path = folder / "config.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    return parse_config(data, folder)
