"""The image tokenizer: a DINO ViT (module names as transformers' ViTModel, so the checkpoint keys match).

Owned rather than imported: transformers changed the position-embedding interpolation after 4.35, the
version TripoSR was trained and released with, and stablekit reproduces the 4.35 rule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ViTConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class PatchEmbeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size,
                                    stride=config.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.projection(pixels).flatten(2).transpose(1, 2)


class Embeddings(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        grid = config.image_size // config.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, grid * grid + 1, config.hidden_size))
        self.patch_embeddings = PatchEmbeddings(config)

    def interpolated_positions(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings for a height x width input, resized as transformers 4.35 did.

        4.35 calls bicubic interpolation with scale factors ((n + 0.1) / g) rather than a target size n, so output
        index i samples the stored g x g grid at (i + 0.5) * g / (n + 0.1) - 0.5; newer releases pass the size.
        """
        stored = self.position_embeddings.shape[1] - 1
        rows, cols = height // self.config.patch_size, width // self.config.patch_size
        if rows * cols == stored and height == width:
            return self.position_embeddings
        dim = self.position_embeddings.shape[-1]
        side = math.sqrt(stored)
        grid = self.position_embeddings[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic",
                             align_corners=False)
        if grid.shape[-2:] != (rows, cols):
            raise ValueError(f"position grid resized to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat((self.position_embeddings[:, :1], grid), dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings(pixels)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        tokens = torch.cat((cls, patches), dim=1)
        return tokens + self.interpolated_positions(pixels.shape[-2], pixels.shape[-1])


class SelfAttention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        batch, length, width = hidden.shape

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, length, self.heads, width // self.heads).transpose(1, 2)

        query, key, value = split(self.query(hidden)), split(self.key(hidden)), split(self.value(hidden))
        # Eager attention in transformers 4.35's order (scores, scale, softmax): what the release computed.
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
        out = torch.matmul(scores.softmax(dim=-1), value)
        return out.transpose(1, 2).reshape(batch, length, width)


class SelfOutput(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)


class Attention(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.output = SelfOutput(config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(hidden))


class Intermediate(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(hidden))  # exact (erf) GELU, transformers' "gelu"


class Output(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense(hidden)


class Layer(nn.Module):
    """A pre-norm ViT block."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attention(self.layernorm_before(hidden))
        return hidden + self.output(self.intermediate(self.layernorm_after(hidden)))


class Encoder(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden)
        return hidden


class Pooler(nn.Module):
    """Present in the checkpoint (and so here, for a strict load); TripoSR never uses its output."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class ViTModel(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = Pooler(config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The last hidden state after the final LayerNorm, CLS token first: (B, 1 + patches, hidden)."""
        return self.layernorm(self.encoder(self.embeddings(pixels)))


class DINOSingleImageTokenizer(nn.Module):
    """ImageNet-normalise images in [0, 1] and return all ViT tokens as the backbone's cross-attention context."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.model = ViTModel(config)
        self.reset_normalization()

    def reset_normalization(self, device: torch.device | str | None = None) -> None:
        """(Re)create the mean/std buffers; they are not in the checkpoint, so a meta-device build needs them."""
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> tokens (B, 1 + H*W/patch^2, hidden)."""
        return self.model((images - self.image_mean) / self.image_std)
