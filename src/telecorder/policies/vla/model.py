"""The VLA network: an encoder over instruction, image and state tokens, and one of four action heads.

Encoder: the instruction's WordPiece ids (learned embeddings + positions); per camera, a
convolutional stem (stride-2 3x3 convolutions with GroupNorm and GELU) whose output grid is
the camera's image tokens (a 1x1 projection to the model width, learned grid positions and a
camera embedding); state tokens (an MLP of the normalized state: one proprio token, and with
``--obs state`` one token per object of the environment state, grouped by the dimension names
``red_cube.x``, ... so that attention can pick the object an instruction names); one learned
readout token. A pre-norm transformer encoder runs over ``[instruction, images, state, readout]``,
with padded instruction positions masked out.

Heads (``cfg.head``), all predicting a chunk of ``horizon`` normalized actions, each given the
normalized state directly too (a linear projection added to its inputs, or concatenated for
``l1``): attention mixes what the instruction selects, the head keeps the state's precision:

* ``l1``: an MLP on the readout token regresses the chunk (ACT's chunking, without the CVAE);
* ``flow``: a flow-matching action expert (pi0-style): ``horizon`` action tokens, embedded from
  the noisy chunk with the flow time, attend to each other and cross-attend to the encoder's
  tokens; trained to predict the velocity ``action - noise`` at ``x_t = (1 - t) noise + t action``,
  sampled by ``flow_steps`` Euler steps from Gaussian noise;
* ``bins`` / ``fast``: a causal transformer decoder cross-attending to the encoder predicts the
  chunk's tokens one after the other (teacher forcing in training; greedy or temperature
  sampling at inference), as RT-2 / OpenVLA (bins) and pi0-FAST (FAST tokens) do.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...errors import missing_extra
from ..base import PolicyError
from .blocks import Block, sinusoid
from .config import TOKEN_HEADS, VLAConfig

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

IGNORE = -100


class ImageStem(nn.Module):
    """uint8 ``[B, 3, h, w]`` -> image tokens ``[B, rows * cols, width]``."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in cfg.channels:
            layers += [nn.Conv2d(c_in, c, 3, stride=2, padding=1), nn.GroupNorm(cfg.groups, c), nn.GELU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, cfg.width, 1)
        rows, cols = cfg.image_grid
        self.pos = nn.Parameter(torch.randn(rows * cols, cfg.width) * 0.02)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.conv(img.float() / 255.0 - 0.5))
        return x.flatten(2).transpose(1, 2) + self.pos


class Encoder(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        d = cfg.width
        self.cfg = cfg
        self.text = nn.Embedding(cfg.text_vocab, d)
        self.text_pos = nn.Parameter(torch.randn(cfg.max_text_tokens, d) * 0.02)
        self.stems = nn.ModuleDict({cam: ImageStem(cfg) for cam in cfg.cameras})
        self.camera = nn.Parameter(torch.randn(max(1, len(cfg.cameras)), d) * 0.02)
        groups = cfg.groups_of_state
        # Tokens of the same size share their projection (every cube's pose is read alike, so reaching a
        # cube is learnt from the demonstrations of every colour); a learned embedding per token tells
        # them apart (which one the instruction names).
        sizes = sorted({len(g) for g in groups})
        self.state_in = nn.ModuleDict({str(n): nn.Linear(n, d) for n in sizes})
        self.state_out = nn.Sequential(nn.GELU(), nn.Linear(d, d))
        self.state_pos = nn.Parameter(torch.randn(len(groups), d) * 0.02)
        self.state_sizes = [len(g) for g in groups]
        for i, g in enumerate(groups):
            self.register_buffer(f"state_index_{i}", torch.tensor(g, dtype=torch.long), persistent=False)
        self.readout = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.blocks = nn.ModuleList(
            Block(d, cfg.attention_heads, cfg.mlp_ratio, dropout=cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)

    def forward(self, state: torch.Tensor, images: Mapping[str, torch.Tensor], text: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens ``[B, S, width]`` and which of them are real ``[B, S]`` (the readout is the last)."""
        b = state.shape[0]
        tokens = [self.text(text) + self.text_pos[: text.shape[1]]]
        masks = [text_mask]
        for i, cam in enumerate(self.cfg.cameras):
            if cam not in images:
                raise PolicyError(f"vla model: no image for camera {cam!r}")
            t = self.stems[cam](images[cam]) + self.camera[i]
            tokens.append(t)
            masks.append(torch.ones(b, t.shape[1], dtype=torch.bool, device=state.device))
        parts = [self.state_in[str(n)](state.index_select(1, getattr(self, f"state_index_{i}")))
                 for i, n in enumerate(self.state_sizes)]
        tokens += [self.state_out(torch.stack(parts, dim=1)) + self.state_pos, self.readout.expand(b, 1, -1)]
        masks.append(torch.ones(b, len(parts) + 1, dtype=torch.bool, device=state.device))
        x, mask = torch.cat(tokens, dim=1), torch.cat(masks, dim=1)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.norm(x), mask


class L1Head(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.mlp = nn.Sequential(nn.Linear(d + cfg.state_dim, 2 * d), nn.GELU(), nn.Linear(2 * d, 2 * d), nn.GELU(),
                                 nn.Linear(2 * d, cfg.horizon * cfg.action_dim))

    def forward(self, memory: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = torch.cat([memory[:, -1], state], dim=-1)
        return self.mlp(x).reshape(-1, self.cfg.horizon, self.cfg.action_dim)


class FlowHead(nn.Module):
    """The action expert: velocity of the noisy chunk at flow time ``t``, given the encoder's tokens."""

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.inp = nn.Linear(cfg.action_dim, d)
        self.pos = nn.Parameter(torch.randn(cfg.horizon, d) * 0.02)
        self.time = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.state = nn.Linear(cfg.state_dim, d)
        self.blocks = nn.ModuleList(
            Block(d, cfg.attention_heads, cfg.mlp_ratio, cross=True, dropout=cfg.dropout)
            for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.action_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor,
                state: torch.Tensor) -> torch.Tensor:
        h = self.inp(x_t) + self.pos + (self.time(sinusoid(t, self.cfg.width)) + self.state(state))[:, None]
        for block in self.blocks:
            h = block(h, memory=memory, memory_mask=mask)
        return self.out(self.norm(h))

    def sample(self, memory: torch.Tensor, mask: torch.Tensor, state: torch.Tensor,
               generator: torch.Generator | None, steps: int) -> torch.Tensor:
        b = memory.shape[0]
        x = torch.randn(b, self.cfg.horizon, self.cfg.action_dim, generator=generator, dtype=memory.dtype)
        dt = 1.0 / steps
        for i in range(steps):
            t = torch.full((b,), i * dt, dtype=memory.dtype)
            x = x + dt * self(x, t, memory, mask, state)
        return x


class TokenHead(nn.Module):
    """A causal decoder over action tokens; id ``vocab`` is the start token, ``vocab + 1`` a masked input.

    In training a fraction ``token_dropout`` of the teacher-forced inputs is masked: without it the
    decoder learns to copy the previous step's token (an action chunk at 30 Hz changes by less than a
    bin per step), and greedy decoding then repeats the first step for the whole chunk and never
    leaves a resting pose.
    """

    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.width
        self.embed = nn.Embedding(cfg.action_vocab + 2, d)
        self.pos = nn.Parameter(torch.randn(cfg.max_action_tokens, d) * 0.02)
        self.state = nn.Linear(cfg.state_dim, d)
        self.blocks = nn.ModuleList(
            Block(d, cfg.attention_heads, cfg.mlp_ratio, cross=True, dropout=cfg.dropout)
            for _ in range(cfg.decoder_layers))
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.action_vocab)

    def forward(self, inputs: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor,
                state: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` of each next token given ``inputs`` ``[B, T]`` (start token first)."""
        h = self.embed(inputs) + self.pos[: inputs.shape[1]] + self.state(state)[:, None]
        for block in self.blocks:
            h = block(h, memory=memory, memory_mask=mask, causal=True)
        return self.out(self.norm(h))

    def teacher_forced_loss(self, targets: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor,
                            state: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Cross-entropy of ``targets`` ``[B, T]`` (``IGNORE`` where there is no label)."""
        start = torch.full_like(targets[:, :1], self.cfg.action_vocab)
        inputs = torch.cat([start, targets[:, :-1].clamp_min(0)], dim=1)
        if self.training and self.cfg.token_dropout > 0:
            drop = torch.rand(inputs.shape, generator=generator) < self.cfg.token_dropout
            drop[:, 0] = False
            inputs = inputs.masked_fill(drop, self.cfg.action_vocab + 1)
        logits = self(inputs, memory, mask, state)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE)

    def generate(self, memory: torch.Tensor, mask: torch.Tensor, state: torch.Tensor, length: int,
                 eos: int | None = None,
                 temperature: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Up to ``length`` tokens ``[B, n]``, greedy (``temperature`` 0) or sampled; stops early once every
        row has produced ``eos``."""
        b = memory.shape[0]
        seq = torch.full((b, 1), self.cfg.action_vocab, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        for _ in range(length):
            logits = self(seq, memory, mask, state)[:, -1]
            if temperature > 0:
                probs = torch.softmax(logits / temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            else:
                nxt = logits.argmax(-1)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            if eos is not None:
                done |= nxt == eos
                if bool(done.all()):
                    break
        return seq[:, 1:]


class VLAModel(nn.Module):
    def __init__(self, cfg: VLAConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        if cfg.head == "l1":
            self.head: nn.Module = L1Head(cfg)
        elif cfg.head == "flow":
            self.head = FlowHead(cfg)
        else:
            self.head = TokenHead(cfg)

    def loss(self, state: torch.Tensor, images: Mapping[str, torch.Tensor], text: torch.Tensor,
             text_mask: torch.Tensor, action: torch.Tensor, action_is_pad: torch.Tensor,
             tokens: torch.Tensor | None = None, generator: torch.Generator | None = None,
             flow_repeats: int = 1, action_dim_is_pad: torch.Tensor | None = None) -> torch.Tensor:
        """The head's training loss on one batch (actions normalized; padded chunk rows carry no loss, nor,
        with ``action_dim_is_pad`` ``[B, A]`` (a mixture of robots), padded action dimensions)."""
        memory, mask = self.encoder(state, images, text, text_mask)
        valid = (~action_is_pad).to(action.dtype)[..., None]
        if action_dim_is_pad is not None:
            if self.cfg.head not in ("l1", "flow"):
                raise PolicyError(f"vla model: the {self.cfg.head} head cannot mask padded action dimensions")
            valid = valid * (~action_dim_is_pad).to(action.dtype)[:, None, :]
        # Per real value: every action dimension of a real row, or only the real dimensions.
        count = valid.sum() if action_dim_is_pad is not None else valid.sum() * action.shape[-1]
        if self.cfg.head == "l1":
            pred = self.head(memory, state)
            return ((pred - action).abs() * valid).sum() / count.clamp_min(1.0)
        if self.cfg.head == "flow":
            k = max(1, int(flow_repeats))
            if k > 1:  # several noise draws per encoded sample: the encoder is the costly part
                memory, mask = memory.repeat_interleave(k, 0), mask.repeat_interleave(k, 0)
                action, valid = action.repeat_interleave(k, 0), valid.repeat_interleave(k, 0)
                state = state.repeat_interleave(k, 0)
            noise = torch.randn(action.shape, generator=generator, dtype=action.dtype)
            t = torch.rand(action.shape[0], generator=generator, dtype=action.dtype)
            x_t = (1 - t)[:, None, None] * noise + t[:, None, None] * action
            v = self.head(x_t, t, memory, mask, state)
            count = valid.sum() if action_dim_is_pad is not None else valid.sum() * action.shape[-1]
            return (((v - (action - noise)) ** 2) * valid).sum() / count.clamp_min(1.0)
        if tokens is None:
            raise PolicyError(f"vla model: the {self.cfg.head} head trains on action tokens")
        return self.head.teacher_forced_loss(tokens, memory, mask, state, generator)

    @torch.no_grad()
    def act(self, state: torch.Tensor, images: Mapping[str, torch.Tensor], text: torch.Tensor,
            text_mask: torch.Tensor, *, eos: int | None = None, temperature: float = 0.0,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """A normalized chunk ``[B, horizon, A]`` (``l1``, ``flow``) or generated token ids (``bins``, ``fast``)."""
        memory, mask = self.encoder(state, images, text, text_mask)
        if self.cfg.head == "l1":
            return self.head(memory, state)
        if self.cfg.head == "flow":
            return self.head.sample(memory, mask, state, generator, self.cfg.flow_steps)
        assert self.cfg.head in TOKEN_HEADS
        return self.head.generate(memory, mask, state, self.cfg.max_action_tokens, eos=eos, temperature=temperature,
                                  generator=generator)
