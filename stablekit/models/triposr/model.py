"""The TripoSR network: image -> triplane scene code, and loading the official weights strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import StablekitError
from .backbone import Transformer1D
from .config import TripoSRConfig, load_config
from .image_tokenizer import DINOSingleImageTokenizer
from .triplane import NeRFMLP, Triplane1DTokenizer, TriplaneQuery, TriplaneUpsampleNetwork

WEIGHT_FILES = ("model.safetensors", "model.ckpt")  # the first one present is loaded


class WeightsError(StablekitError):
    """A checkpoint that does not match the architecture its config.yaml describes."""


class TripoSR(nn.Module):
    def __init__(self, config: TripoSRConfig) -> None:
        super().__init__()
        self.config = config
        self.image_tokenizer = DINOSingleImageTokenizer(config.image_tokenizer)
        self.tokenizer = Triplane1DTokenizer(config.tokenizer)
        self.backbone = Transformer1D(config.backbone)
        self.post_processor = TriplaneUpsampleNetwork(config.post_processor)
        self.decoder = NeRFMLP(config.decoder)
        self.query = TriplaneQuery(self.decoder, config.renderer)

    def image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_tokenizer(images)

    def backbone_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.tokenizer(image_tokens.shape[0]), image_tokens)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [0, 1] at cond_image_size -> scene codes (B, 3, C, 2P, 2P)."""
        tokens = self.backbone_tokens(self.image_tokens(images))
        return self.post_processor(self.tokenizer.detokenize(tokens))


def read_state_dict(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """model.safetensors, else model.ckpt through torch.load(weights_only=True): tensors only, never code."""
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(path), path
            try:
                data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # a legacy (non-zip) torch file cannot be memory-mapped
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any reader failure is a bad file, said once
            raise WeightsError(f"{path}: cannot read the weights ({type(err).__name__}: {err})",
                               hint="delete the file and download it again") from None
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise WeightsError(f"{path}: expected a flat state dict of tensors")
        return data, path
    raise WeightsError(f"{folder}: no weights ({' or '.join(WEIGHT_FILES)})")


def load_weights(model: TripoSR, state: dict[str, torch.Tensor], source: str | Path = "the checkpoint") -> TripoSR:
    """Load `state` strictly (every key, every shape), assigning the tensors (no copy of a meta-built model)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{label} {len(items)}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if items]
        raise WeightsError(f"{source} does not match its config.yaml ({'; '.join(parts)})",
                           hint="the weights and config.yaml must come from the same TripoSR release")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.image_tokenizer.reset_normalization(next(model.parameters()).device)
    return model


def build(config: TripoSRConfig, device: str | torch.device = "meta") -> TripoSR:
    """The architecture without initialising weights (meta device by default: instant, no memory)."""
    with torch.device(device):
        return TripoSR(config).eval()


def from_pretrained(folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> TripoSR:
    """config.yaml + model.safetensors / model.ckpt from a local folder, strictly, then moved to device/dtype."""
    folder = Path(folder)
    model = build(load_config(folder))
    state, path = read_state_dict(folder)
    load_weights(model, state, path.name)
    return model.to(device=device, dtype=dtype).eval()
