"""The backbone: a 1-D transformer over the triplane tokens, cross-attending to the image tokens.

Module names follow the diffusers-style blocks of the official code (`attn1.to_q`, `ff.net.0.proj`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig


class Attention(nn.Module):
    """Multi-head attention; self-attention when no context is given. q/k/v without bias, as configured."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None, bias: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim), nn.Identity()])  # index 1: dropout (0)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = hidden if context is None else context
        batch = hidden.shape[0]

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.heads, x.shape[-1] // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(hidden)), split(self.to_k(context)),
                                             split(self.to_v(context)))
        out = out.transpose(1, 2).reshape(batch, -1, self.heads * out.shape[-1])
        return self.to_out[0](out)


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(hidden).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for module in self.net:
            hidden = module(hidden)
        return hidden


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm: self-attention, cross-attention to the image, GEGLU feed-forward, each residual."""

    def __init__(self, dim: int, config: BackboneConfig) -> None:
        super().__init__()
        heads, head_dim = config.num_attention_heads, config.attention_head_dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads, head_dim, None, config.attention_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, head_dim, config.cross_attention_dim, config.attention_bias)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.attn1(self.norm1(hidden))
        hidden = hidden + self.attn2(self.norm2(hidden), context)
        return hidden + self.ff(self.norm3(hidden))


class Transformer1D(nn.Module):
    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        inner = config.num_attention_heads * config.attention_head_dim
        self.norm = nn.GroupNorm(config.norm_num_groups, config.in_channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(config.in_channels, inner)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(inner, config) for _ in range(config.num_layers))
        self.proj_out = nn.Linear(inner, config.in_channels)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """tokens (B, C, N), context (B, T, D) -> (B, C, N), with the input tokens added back."""
        hidden = self.proj_in(self.norm(tokens).permute(0, 2, 1))
        for block in self.transformer_blocks:
            hidden = block(hidden, context)
        return self.proj_out(hidden).permute(0, 2, 1) + tokens
