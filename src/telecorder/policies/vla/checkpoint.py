"""VLA checkpoints: ``policy.json`` (kind ``"vla"``), ``model.safetensors``, and the tokenizers' own files.

Beside the weights, the folder holds ``text_tokenizer.json`` (the instruction WordPiece
vocabulary, a ``tokenizers`` file) and, for ``--head fast``, ``fast_tokenizer/``
(``tokenizer.json`` + ``fast_config.json``); quantile bin edges live in ``policy.json``.
Everything is JSON or safetensors: nothing is unpickled, and every damaged file is one
:class:`~telecorder.policies.PolicyError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...actions.normalize import Normalizer
from ...atomic import write_json_atomic
from ...errors import TelecorderError
from ..base import POLICY_FORMAT, PolicyError, PolicySpec
from ..embodiments import mixture_meta
from ..weights import POLICY_FILE, load_weights, save_weights
from .action_codes import BinCodec, FastCodec
from .config import VLAConfig
from .model import VLAModel
from .policy import VLAPolicy
from .text import TEXT_FILE, InstructionTokenizer


def save_vla_policy(out_dir: str | Path, policy: VLAPolicy, training: Mapping[str, Any] | None = None, *,
                    embodiments: Any = None) -> Path:
    """Write ``policy`` (weights, tokenizers, config, training summary) to ``out_dir``. ``embodiments``: the
    :class:`~..embodiments.MixturePolicy` whose inner model ``policy`` is (a policy of several robots)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy.text.save(out)
    codec: dict[str, Any] | None = None
    if isinstance(policy.codec, FastCodec):
        policy.codec.save(out)
        codec = {"kind": "fast", **policy.codec.to_dict()}
    elif isinstance(policy.codec, BinCodec):
        codec = {"kind": "bins", **policy.codec.to_dict()}
    meta = {
        "format": POLICY_FORMAT,
        "kind": "vla",
        "spec": policy.spec.to_dict(),
        "model": policy.model.cfg.to_dict(),
        "action_normalizer": policy.action_normalizer.to_dict(),
        "text_tokenizer": {"file": TEXT_FILE, "vocab": policy.text.vocab_size},
        "action_tokens": codec,
        **mixture_meta(embodiments),
        "weights": save_weights(out, policy.model),
        "training": dict(training or {}),
    }
    write_json_atomic(out / POLICY_FILE, meta)
    return out


def load_vla(root: Path, meta: Mapping[str, Any], spec: PolicySpec, action_normalizer: Normalizer, *,
             num_threads: int | None = 1) -> VLAPolicy:
    """The VLA policy of folder ``root`` whose ``policy.json`` is ``meta`` (already format-checked)."""
    meta_path = root / POLICY_FILE
    try:
        cfg = VLAConfig.from_dict(meta["model"])
        codec_meta = meta.get("action_tokens")
        if codec_meta is not None and not isinstance(codec_meta, Mapping):
            raise PolicyError(f"'action_tokens' must be an object or null, not {codec_meta!r:.40}")
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy") from e
    except (KeyError, TypeError, ValueError, TelecorderError) as e:
        detail = f"missing key {e}" if isinstance(e, KeyError) else str(e)
        raise PolicyError(f"{meta_path}: malformed ({detail}); retrain the policy") from e
    text = InstructionTokenizer.load(root, cfg.max_text_tokens)
    if text.vocab_size != cfg.text_vocab:
        raise PolicyError(f"{root / TEXT_FILE}: {text.vocab_size} pieces, but the model was trained with "
                          f"{cfg.text_vocab}; the files come from different trainings: retrain or restore the folder")
    codec: BinCodec | FastCodec | None = None
    try:
        if cfg.head == "bins":
            if not codec_meta or codec_meta.get("kind") != "bins":
                raise PolicyError("the bins head needs its 'action_tokens' entry (kind 'bins')")
            codec = BinCodec.from_dict(codec_meta)
        elif cfg.head == "fast":
            if not codec_meta or codec_meta.get("kind") != "fast":
                raise PolicyError("the fast head needs its 'action_tokens' entry (kind 'fast')")
            codec = FastCodec.load(root, codec_meta)
    except (KeyError, TypeError, ValueError) as e:
        raise PolicyError(f"{meta_path}: malformed 'action_tokens' ({e}); retrain the policy") from e
    except PolicyError as e:
        msg = str(e)
        raise PolicyError(msg if msg.startswith(str(root)) else f"{meta_path}: {msg}") from e
    model = load_weights(root, meta, lambda: VLAModel(cfg))
    try:
        return VLAPolicy(model, spec, action_normalizer, text, codec, num_threads=num_threads,
                         info=dict(meta.get("training") or {}))
    except PolicyError as e:
        raise PolicyError(f"{meta_path}: {e}; retrain the policy") from e
