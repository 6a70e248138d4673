"""Transformer pieces of the VLA: pre-norm attention blocks with optional cross-attention."""

from __future__ import annotations

import math

from ...errors import missing_extra

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``context`` (itself when None), on ``scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        """``mask`` bool ``[B, S]``: the context positions that may be attended to."""
        b, t, d = x.shape
        ctx = x if context is None else context
        s = ctx.shape[1]
        h = self.heads
        q = self.q(x).reshape(b, t, h, d // h).transpose(1, 2)
        k, v = self.kv(ctx).reshape(b, s, 2, h, d // h).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        if causal and attn_mask is not None:
            attn_mask = attn_mask & torch.ones(t, s, dtype=torch.bool, device=x.device).tril()
            causal = False
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Self-attention (optionally causal), then cross-attention to a memory (decoders), then an MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, cross: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.cross = Attention(width, heads, dropout) if cross else None
        self.norm2 = nn.LayerNorm(width) if cross else None
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask, causal=causal)
        if self.cross is not None and self.norm2 is not None:
            x = x + self.cross(self.norm2(x), memory, memory_mask)
        return x + self.mlp(self.norm3(x))


def sinusoid(t: torch.Tensor, width: int) -> torch.Tensor:
    """``[B]`` times in [0, 1] -> ``[B, width]`` sinusoidal features (as diffusion models embed time)."""
    half = width // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=t.dtype, device=t.device) / max(1, half - 1))
    angles = 1000.0 * t[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
