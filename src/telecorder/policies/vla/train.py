"""Train the reference VLA (``telecorder train --policy vla --head bins|fast|flow|l1``).

One code path for every head: the samples come from :class:`~telecorder.loaders.TorchDataset`
(read once into memory by :mod:`..training_data`), with ``paraphrase="random"`` so that each
training sample carries one of its task's recorded paraphrases, and ``tokenizer=`` the head's
action codec (uniform or quantile 256-bin tokens, or FAST fitted on the training chunks) so
that ``action_tokens`` come from the loader as any other trainer would get them. The
instruction tokenizer is a WordPiece vocabulary built from the training instructions and the
datasets' recorded paraphrases.

Defaults: states ``mean_std``, actions ``min_max`` (what the 256 bins over [-1, 1] expect);
AdamW with a linear warm-up and a cosine decay, gradients clipped at norm 1; random +-4 pixel
shifts of the frames and Gaussian noise on the normalized state (as the BC policy); the flow
head draws ``flow_repeats`` noise samples per encoded sample (the encoder is the costly pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import TelecorderError, missing_extra
from ...loaders.tasks import Paraphrases
from ..base import PolicySpec
from ..bc import OBS_VARIANTS
from ..loop import ProgressFn, fit
from ..training_data import (
    ACTION_NORMALIZE,
    check_out,
    choose_inputs,
    load_training_data,
    open_datasets,
    random_shift,
    sample_indices,
)
from ..weights import MODEL_FILE, POLICY_FILE
from .action_codes import BinCodec, FastCodec
from .checkpoint import save_vla_policy
from .config import BIN_KINDS, HEADS, VLAConfig
from .model import IGNORE, VLAModel
from .policy import VLAPolicy
from .text import TEXT_FILE, InstructionTokenizer

try:
    import torch
except ImportError as e:  # pragma: no cover - depends on the environment
    raise missing_extra("torch", "torch") from e

__all__ = ["DEFAULTS", "fit_instructions", "state_token_groups", "train_vla"]

# min_max, not the BC policy's mean_std: an object's pose holds near-constant dimensions (a resting
# cube's tilt quaternion parts, std ~5e-4) that mean_std blows up into values of +-10 whenever the cube
# is touched, and the object tokens share one projection, so those spikes would drown the positions.
STATE_NORMALIZE = "min_max"

DEFAULTS: dict[str, Any] = {
    "steps": 4000,
    "horizon": 10,
    "batch_size": {"state": 128, "images": 32},
    "lr": 5e-4,
    "weight_decay": 0.01,
    "image_size": (96, 96),
    "shift_pixels": 4,
    "state_noise": 0.05,
    "flow_repeats": 2,
    "width": 128,
    "layers": 3,
    "decoder_layers": 2,
    "attention_heads": 4,
    "flow_steps": 10,
    "text_vocab": 512,
    "fast_vocab": 256,
}


def _codec_fitter(head: str, bins: str) -> Callable[[np.ndarray], BinCodec | FastCodec] | None:
    if head == "bins":
        return lambda chunks: BinCodec.fit(chunks, bins)
    if head == "fast":
        return lambda chunks: FastCodec.fit(chunks, vocab_size=DEFAULTS["fast_vocab"])
    return None


def state_token_groups(info: Any, keys: Sequence[str]) -> tuple[tuple[int, ...], ...]:
    """The state dimensions of each state token: one per feature, except a feature whose dimension names
    all read ``object.field`` (``observation.environment_state``: ``red_cube.x``, ...), which gives one
    token per object."""
    groups: list[tuple[int, ...]] = []
    offset = 0
    for key in keys:
        f = info.features[key]
        n = int(np.prod(f.shape))
        names = list(f.names or [])
        if len(names) == n and n > 0 and all("." in str(x) for x in names):
            by_object: dict[str, list[int]] = {}
            for i, name in enumerate(names):
                by_object.setdefault(str(name).split(".", 1)[0], []).append(offset + i)
            groups += [tuple(v) for v in by_object.values()]
        else:
            groups.append(tuple(range(offset, offset + n)))
        offset += n
    return tuple(groups)


def instruction_corpus(opened: Sequence[Any], instructions: Sequence[str]) -> list[str]:
    """The training instructions and every recorded paraphrase the datasets list (never held-out ones)."""
    texts = list(dict.fromkeys(instructions))
    for d in opened:
        for options in Paraphrases.from_info(d.info).by_task.values():
            texts += [t for t in options if t not in texts]
    return texts


def encode_texts(tok: InstructionTokenizer, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    unique = list(dict.fromkeys(instructions))
    ids, mask = tok.encode(unique)
    where = {t: i for i, t in enumerate(unique)}
    rows = np.array([where[t] for t in instructions], dtype=np.int64)
    return torch.from_numpy(ids[rows]), torch.from_numpy(mask[rows])


def fit_instructions(opened: Sequence[Any], train: dict[str, Any],
                     val: dict[str, Any] | None) -> tuple[InstructionTokenizer, list[str]]:
    """The instruction tokenizer built from the training instructions and the datasets' recorded paraphrases,
    and that corpus; every sample of ``train`` and ``val`` gains its ``text`` ids and ``text_mask``."""
    corpus = instruction_corpus(opened, train["instruction"])
    text = InstructionTokenizer.build(corpus, vocab_size=DEFAULTS["text_vocab"])
    longest = max((len(text.pieces(t)) for t in corpus), default=1)
    text.max_tokens = min(32, longest + 4)  # room for a longer held-out paraphrase
    for part in (train, val):
        if part is not None:
            part["text"], part["text_mask"] = encode_texts(text, part["instruction"])
    return text, corpus


def _targets(data: dict[str, Any], head: str) -> torch.Tensor | None:
    """``action_tokens`` as the cross-entropy's targets: bins of padded chunk rows carry no label."""
    if head not in ("bins", "fast"):
        return None
    tokens = data["action_tokens"].clone()
    if head == "bins":
        a = data["action"].shape[2]
        pad = data["action_is_pad"].repeat_interleave(a, dim=1)
        tokens[pad[:, : tokens.shape[1]]] = IGNORE
    return tokens


def _val_loss(model: VLAModel, data: dict[str, Any], tokens: torch.Tensor | None, limit: int = 1024,
              batch: int = 128) -> float:
    n = data["n"]
    idx = torch.from_numpy(np.unique(np.linspace(0, n - 1, min(n, limit)).round().astype(np.int64)))
    g = torch.Generator().manual_seed(0)  # the same noise every time: comparable flow losses
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            i = idx[s:s + batch]
            loss = model.loss(data["state"][i], {c: v[i] for c, v in data["images"].items()}, data["text"][i],
                              data["text_mask"][i], data["action"][i], data["action_is_pad"][i],
                              None if tokens is None else tokens[i], generator=g)
            total += float(loss) * len(i)
            count += len(i)
    return total / max(1, count)


def train_vla(
    dataset_path: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    head: str = "flow",
    obs: str = "images",
    bins: str = "uniform",
    steps: int = DEFAULTS["steps"],
    horizon: int = DEFAULTS["horizon"],
    val_episodes: int | None = None,
    batch_size: int | None = None,
    lr: float = DEFAULTS["lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    image_size: tuple[int, int] = DEFAULTS["image_size"],
    cameras: Sequence[str] | None = None,
    state_keys: Sequence[str] | None = None,
    width: int = DEFAULTS["width"],
    layers: int = DEFAULTS["layers"],
    decoder_layers: int = DEFAULTS["decoder_layers"],
    attention_heads: int = DEFAULTS["attention_heads"],
    flow_steps: int = DEFAULTS["flow_steps"],
    flow_repeats: int = DEFAULTS["flow_repeats"],
    paraphrase: str = "random",
    seed: int = 0,
    intervention_weight: float | None = None,
    policy_weight: float = 1.0,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
    eval_every: int | None = None,
    augment: bool = True,
    num_threads: int | None = None,
    max_cache_gb: float = 8.0,
    max_minutes: float | None = None,
    state_noise: float = DEFAULTS["state_noise"],
    skip_nonfinite: bool = False,
    max_episodes: int | None = None,
    early_weight: float = 1.0,
) -> dict[str, Any]:
    """Train a :class:`VLAPolicy` with ``head`` on the dataset(s); save it to ``out_dir``.

    ``obs="images"``: ``cameras`` (default: all) at ``image_size`` plus ``observation.state``;
    ``obs="state"``: no cameras, the joint state plus ``observation.environment_state`` (every
    object's pose). The other arguments are those of :func:`telecorder.policies.train.train_bc`
    (``max_episodes``: the first N usable episodes of the first dataset only); ``early_weight`` samples
    the first second of every episode that many times as often (see the comment where it applies);
    ``bins`` is ``uniform`` (RT-2/OpenVLA) or ``quantile`` for ``head="bins"``. Returns the summary
    saved in ``policy.json``.
    """
    t0 = time.monotonic()
    if head not in HEADS:
        raise TelecorderError(f"unknown --head {head!r} (use one of {', '.join(HEADS)})")
    if obs not in OBS_VARIANTS:
        raise TelecorderError(f"unknown --obs {obs!r} (use one of {', '.join(OBS_VARIANTS)})")
    if bins not in BIN_KINDS:
        raise TelecorderError(f"unknown --bins {bins!r} (use one of {', '.join(BIN_KINDS)})")
    if steps < 1 or horizon < 1:
        raise TelecorderError(f"steps and horizon must be >= 1, got {steps} and {horizon}")
    out = Path(out_dir)
    check_out(out, overwrite)
    if num_threads is None:
        num_threads = 2 if obs == "images" else 1
    torch.set_num_threads(max(1, int(num_threads)))

    opened = open_datasets(dataset_path)
    ds = opened[0]
    keys, cams, size = choose_inputs(ds, obs, cameras, image_size, state_keys)
    data = load_training_data(
        opened, state_keys=keys, cameras=cams, image_size=size, horizon=horizon, val_episodes=val_episodes,
        intervention_weight=intervention_weight, policy_weight=policy_weight, skip_nonfinite=skip_nonfinite,
        max_cache_gb=max_cache_gb, t0=t0, max_episodes=max_episodes, fit_tokenizer=_codec_fitter(head, bins),
        paraphrase=paraphrase, paraphrase_seed=seed, state_normalize=STATE_NORMALIZE)
    train, val = data.train, data.val
    codec = data.loader.tokenizer
    text, corpus = fit_instructions(opened, train, val)
    if early_weight > 1:
        # The first second of an episode is where only the instruction tells the tasks apart (the arm
        # starts from the same pose, slowly); later the arm's own motion gives the target away, and a
        # model fitted uniformly learns to follow its motion instead of the words (copycat).
        fps = float(ds.info.fps or 30.0)
        boost = 1.0 + (early_weight - 1.0) * (train["step_index"].double() < fps).double()
        train["weight"] = train["weight"] * boost.to(train["weight"].dtype)
    train_tokens = _targets(train, head)
    val_tokens = _targets(val, head) if val is not None else None

    torch.manual_seed(seed)
    cfg = VLAConfig(
        state_dim=int(train["state"].shape[1]), action_dim=int(train["action"].shape[2]), horizon=horizon, head=head,
        cameras=tuple(cams), image_size=size, text_vocab=text.vocab_size, max_text_tokens=text.max_tokens,
        width=width, layers=layers, attention_heads=attention_heads, decoder_layers=decoder_layers,
        action_vocab=0 if codec is None else codec.vocab, max_action_tokens=0 if codec is None else codec.max_tokens,
        flow_steps=flow_steps, state_groups=state_token_groups(ds.info, keys),
    )
    model = VLAModel(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    batch = int(batch_size or DEFAULTS["batch_size"][obs])

    def batch_loss() -> torch.Tensor:
        idx = sample_indices(train, batch, g)
        images = {c: v[idx] for c, v in train["images"].items()}
        if augment and images and DEFAULTS["shift_pixels"]:
            images = {c: random_shift(v, DEFAULTS["shift_pixels"], g) for c, v in images.items()}
        state = train["state"][idx]
        if state_noise > 0:
            state = state + state_noise * torch.randn(state.shape, generator=g)
        return model.loss(state, images, train["text"][idx], train["text_mask"][idx], train["action"][idx],
                          train["action_is_pad"][idx], None if train_tokens is None else train_tokens[idx],
                          generator=g, flow_repeats=flow_repeats)

    run = fit(model, opt, batch_loss, steps=steps, warmup_max=200, t0=t0, max_minutes=max_minutes,
              validate=None if val is None else lambda: _val_loss(model, val, val_tokens), eval_every=eval_every,
              on_progress=on_progress, clip=model.parameters())
    steps = run.steps

    info = ds.info
    spec = PolicySpec(
        action_dim=cfg.action_dim, horizon=horizon, state_keys=keys, cameras=tuple(cams), image_size=size, history=1,
        fps=info.fps, state_normalizer=data.loader.state_normalizer,
        action_names=info.features[data.loader.action_key].names,
    )
    policy = VLAPolicy(model, spec, data.loader.action_normalizer, text, codec, num_threads=num_threads)
    token_lengths = None
    if train_tokens is not None:
        lengths = (train["action_tokens"] != -100).sum(1).double()
        if head == "fast":
            lengths = lengths - 1  # the end token
        token_lengths = {"mean": round(float(lengths.mean()), 2), "p50": float(lengths.median()),
                         "max": int(lengths.max()), "raw_values_per_chunk": horizon * cfg.action_dim}
    summary: dict[str, Any] = {
        "policy": "vla",
        "head": head,
        "bins": bins if head == "bins" else None,
        "obs": obs,
        "parameters": n_params,
        **run.summary(),
        "max_minutes": max_minutes,
        "batch_size": batch,
        "lr": lr,
        "weight_decay": weight_decay,
        "schedule": f"linear warm-up {run.warmup} steps, cosine decay to 0; gradients clipped at norm 1",
        "loss": {"l1": "L1 on normalized actions, padded rows masked",
                 "flow": f"flow matching (velocity MSE), {flow_repeats} noise draws per sample",
                 "bins": "cross-entropy of 256-bin tokens, teacher forcing",
                 "fast": "cross-entropy of FAST tokens + end token, teacher forcing"}[head],
        "augment": f"random shift +-{DEFAULTS['shift_pixels']} px" if augment and cams else None,
        "state_noise": state_noise,
        "paraphrase": paraphrase,
        "early_weight": early_weight,
        "instruction_vocab": text.vocab_size,
        "instruction_tokens": text.max_tokens,
        "state_tokens": len(cfg.groups_of_state),
        "instructions_seen": len(corpus),
        "action_tokens_per_chunk": token_lengths,
        "normalization": {"state": STATE_NORMALIZE, "action": ACTION_NORMALIZE},
        "dataset": str(ds.root.resolve()),
        "extra_datasets": [str(o.root.resolve()) for o in opened[1:]],
        "train_episodes": data.train_episodes,
        "val_episodes": data.val_episodes,
        "train_samples": train["n"],
        "val_samples": 0 if val is None else val["n"],
        "skipped_nonfinite": {str(d.root): {str(e): why for e, why in bad.items()}
                              for d, bad in zip(opened, data.nonfinite, strict=True) if bad},
        "seed": seed,
        "num_threads": num_threads,
        "load_time_s": round(data.load_s, 3),
        "wall_time_s": round(time.monotonic() - t0, 3),
        "frame_cache_bytes": data.cache_bytes,
        "torch_version": torch.__version__,
    }
    save_vla_policy(out, policy, summary)
    summary["out"] = str(out)
    summary["files"] = [POLICY_FILE, MODEL_FILE, TEXT_FILE, *(["fast_tokenizer/"] if head == "fast" else [])]
    return summary
