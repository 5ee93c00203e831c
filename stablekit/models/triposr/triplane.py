"""Triplane pieces: the learned tokens, the upsampling post-processor, the NeRF MLP and the point query."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import DecoderConfig, PostProcessorConfig, RendererConfig, TokenizerConfig


class Triplane1DTokenizer(nn.Module):
    """Three learned planes (3, C, S, S), flattened plane-major into C x 3*S*S tokens."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.plane_size = config.plane_size
        self.embeddings = nn.Parameter(
            torch.randn(3, config.num_channels, config.plane_size, config.plane_size) / math.sqrt(config.num_channels))

    def forward(self, batch: int) -> torch.Tensor:
        channels = self.embeddings.shape[1]
        planes = self.embeddings.permute(1, 0, 2, 3).reshape(channels, -1)  # (C, plane*row*col)
        return planes.unsqueeze(0).expand(batch, -1, -1)

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, C, 3*S*S) -> (B, 3, C, S, S)."""
        batch, channels, _ = tokens.shape
        return tokens.reshape(batch, channels, 3, self.plane_size, self.plane_size).permute(0, 2, 1, 3, 4)


class TriplaneUpsampleNetwork(nn.Module):
    """One transposed convolution (kernel 2, stride 2) per plane: (B, 3, Ci, S, S) -> (B, 3, Co, 2S, 2S)."""

    def __init__(self, config: PostProcessorConfig) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(config.in_channels, config.out_channels, kernel_size=2, stride=2)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        batch, count = planes.shape[:2]
        out = self.upsample(planes.reshape(batch * count, *planes.shape[2:]))
        return out.reshape(batch, count, *out.shape[1:])


class NeRFMLP(nn.Module):
    """Linear layers at even indices of `layers`, activations between; output: density logit, 3 colour logits."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        activation = {"silu": nn.SiLU, "relu": nn.ReLU}[config.activation]
        width = config.n_neurons
        layers: list[nn.Module] = [nn.Linear(config.in_channels, width, bias=config.bias), activation()]
        for _ in range(config.n_hidden_layers - 1):
            layers += [nn.Linear(width, width, bias=config.bias), activation()]
        layers.append(nn.Linear(width, 4, bias=config.bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


def sample_planes(scene_code: torch.Tensor, unit_points: torch.Tensor, reduction: str = "concat") -> torch.Tensor:
    """Bilinear features of points in [-1, 1]^3 from planes (3, C, H, W): plane 0 at (x, y), 1 at (x, z), 2 at (y, z).

    The first coordinate of each pair runs along the plane's width. Returns (N, 3C) (concat) or (N, C) (mean).
    """
    pairs = torch.stack((unit_points[:, [0, 1]], unit_points[:, [0, 2]], unit_points[:, [1, 2]]), dim=0)
    out = F.grid_sample(scene_code, pairs.unsqueeze(1), mode="bilinear", padding_mode="zeros", align_corners=False)
    out = out.squeeze(2)  # (3, C, N)
    if reduction == "mean":
        return out.mean(dim=0).transpose(0, 1)
    return out.permute(2, 0, 1).reshape(out.shape[2], -1)


class TriplaneQuery:
    """Density and colour at world-space points for one scene code, as TriplaneNeRFRenderer.query_triplane."""

    def __init__(self, decoder: NeRFMLP, config: RendererConfig) -> None:
        self.decoder = decoder
        self.config = config

    def unit(self, points: torch.Tensor) -> torch.Tensor:
        """World [-radius, radius] -> [-1, 1], with the official operation order (it decides the last bit)."""
        radius = self.config.radius
        return (points - (-radius)) / (radius - (-radius)) * 2.0 + -1.0

    def raw(self, scene_code: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        """Decoder output (N, 4) at world points (N, 3)."""
        features = sample_planes(scene_code, self.unit(points), self.config.feature_reduction)
        return self.decoder(features)

    def density(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(raw[:, 0] + self.config.density_bias)

    @staticmethod
    def color(raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw[:, 1:4])

    def __call__(self, scene_code: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.raw(scene_code, points)
        return self.density(raw), self.color(raw)
