"""The reference VLA (``telecorder train --policy vla``): tokenizers, heads, training through the
loaders, checkpoints and their damage, and the CLI.

The training tests use a dataset in which only the instruction tells the action apart (same
state distribution, opposite actions): a model that ignored the language could not pass them.
The closed-loop test on the cubes scene lives in tests/test_vla_closed_loop.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from conftest import make_info  # noqa: E402

from telecorder.actions import UniformBins  # noqa: E402
from telecorder.datasets.async_writer import AsyncEpisodeWriter, Step  # noqa: E402
from telecorder.datasets.dataset import DatasetWriter  # noqa: E402
from telecorder.policies import PolicyError  # noqa: E402
from telecorder.policies.loading import load_policy  # noqa: E402
from telecorder.policies.vla import BinCodec, FastCodec, InstructionTokenizer, VLAConfig, VLAModel  # noqa: E402
from telecorder.policies.vla.train import train_vla  # noqa: E402

BIN = Path(sys.executable).parent
LEFT, RIGHT = "push the red cube to the left", "push the red cube to the right"
PATTERN = np.array([0.8, -0.6, 0.4], np.float32)
TINY = dict(width=32, layers=1, decoder_layers=1, attention_heads=2)


def language_dataset(root: Path, cameras: tuple[str, ...] = ()) -> Path:
    """Episodes whose action is +PATTERN when told LEFT and -PATTERN when told RIGHT, whatever the state."""
    info = make_info(cameras=cameras, dim=3)
    rng = np.random.default_rng(0)
    with DatasetWriter(root, info) as dw:
        writer = AsyncEpisodeWriter(dw, encode_threads=1)
        try:
            for k in range(8):
                text, sign = (LEFT, 1.0) if k % 2 == 0 else (RIGHT, -1.0)
                writer.begin({"task": text, "language_instruction": text})
                for i in range(30):
                    frame = np.full((48, 64, 3), 90, np.uint8)
                    writer.add(Step(
                        timestamp=i / 30,
                        numeric={"observation.state": rng.normal(size=3).astype(np.float32),
                                 "action": (sign * PATTERN + 0.002 * rng.normal(size=3)).astype(np.float32)},
                        frames={c: frame for c in cameras}, frame_time={c: i / 30 for c in cameras},
                        frame_index={c: i for c in cameras}))
                writer.end({"success": True}, {"task": text, "success": True}).result(timeout=30)
        finally:
            writer.close()
    return root


@pytest.fixture(scope="module")
def lang(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return language_dataset(tmp_path_factory.mktemp("vla") / "lang")


def obs(text: str, dim: int = 3) -> dict:
    return {"state": np.zeros((1, dim), np.float32), "state_is_pad": np.array([False]), "language_instruction": text}


# ---------------------------------------------------------------------- tokenizers

def test_instruction_tokenizer_splits_unseen_words_into_known_pieces(tmp_path: Path) -> None:
    tok = InstructionTokenizer.build(["pick up the red cube", "grab the red block", "put the blue cube in the bin"])
    ids, mask = tok.encode(["Pick up the RED cube", "", "nudge the red one"])
    assert ids.shape == (3, tok.max_tokens) and mask[0].sum() == 5 and not mask[1].any()
    # "nudge", "one" and "zigzag" were never seen (nor a word starting with n or z): pieces, not [UNK]
    assert tok.unknown_fraction(["nudge the red one zigzag"]) == 0.0
    assert len(tok.pieces("zigzag")) > 1
    assert tok.unknown_fraction(["ζζζ"]) == 1.0  # a character no instruction has
    tok.save(tmp_path)
    again = InstructionTokenizer.load(tmp_path, tok.max_tokens)
    assert (again.encode(["grab the red block"])[0] == tok.encode(["grab the red block"])[0]).all()
    (tmp_path / "text_tokenizer.json").write_text('{"model": 3')
    with pytest.raises(PolicyError, match=r"text_tokenizer\.json: not a tokenizers JSON file"):
        InstructionTokenizer.load(tmp_path, tok.max_tokens)


def test_bin_codec_is_openvla_arithmetic_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    chunks = np.clip(rng.normal(scale=0.5, size=(64, 4, 3)), -1, 1)
    codec = BinCodec.fit(chunks, "uniform")
    ids = codec.encode(chunks[0])
    assert len(ids) == 12 == codec.max_tokens and min(ids) >= 0 and max(ids) < 256
    assert ids == (UniformBins(256).encode(chunks[0]) - 1).reshape(-1).tolist()  # OpenVLA's bins, step-major
    back, why = codec.decode(ids)
    assert why == "" and np.abs(back - chunks[0]).max() <= 2 / 255 + 1e-9
    assert codec.decode(ids[:-1])[0] is None
    quantile = BinCodec.fit(chunks, "quantile")
    back, _ = quantile.decode(quantile.encode(chunks[0]))
    assert np.abs(back - chunks[0]).max() < 0.05
    assert BinCodec.from_dict(json.loads(json.dumps(quantile.to_dict()))).encode(chunks[1]) == quantile.encode(chunks[1])


def test_fast_codec_ends_with_eos_and_refuses_what_does_not_decode() -> None:
    t = np.linspace(0, 1, 10)
    rng = np.random.default_rng(2)
    chunks = np.stack([np.stack([np.sin(2 * t + p), np.cos(3 * t + p)], axis=1) * 0.8 for p in rng.uniform(0, 6, 200)])
    codec = FastCodec.fit(chunks, vocab_size=128)
    ids = codec.encode(chunks[0])
    assert ids[-1] == codec.eos and codec.eos == codec.vocab - 1 and len(ids) < 20  # compressed: 20 values
    back, why = codec.decode(ids)
    assert why == "" and np.abs(back - chunks[0]).max() < 0.1
    assert codec.decode(ids[:-1]) == (None, f"no end token in {len(ids) - 1} tokens")
    assert codec.decode([codec.eos])[0] is None
    bad, why = codec.decode([ids[0], codec.eos])  # one piece: too few coefficients
    assert bad is None and "coefficients" in why


# ---------------------------------------------------------------------- the model

@pytest.mark.parametrize("head", ["l1", "flow", "bins", "fast"])
def test_every_head_learns_what_only_the_instruction_says(lang: Path, tmp_path: Path, head: str) -> None:
    summary = train_vla(lang, tmp_path / head, head=head, obs="state", state_keys=["observation.state"], steps=250,
                        horizon=4, lr=3e-3, val_episodes=0, **TINY)
    assert summary["final_train_loss"] < summary["initial_train_loss"]
    policy = load_policy(tmp_path / head)
    left, right = policy.predict(obs(LEFT)), policy.predict(obs(RIGHT))
    assert left.shape == (4, 3) and right.shape == (4, 3)
    # raw units: the recorded actions are +-PATTERN (+- noise)
    assert np.abs(left - PATTERN).max() < 0.25, left
    assert np.abs(right + PATTERN).max() < 0.25, right
    assert policy.describe().startswith(f"VLAPolicy({head} head")
    if head in ("bins", "fast"):
        assert summary["action_tokens_per_chunk"]["raw_values_per_chunk"] == 12


def test_images_variant_trains_and_runs_from_frames(tmp_path: Path) -> None:
    data = language_dataset(tmp_path / "cams", cameras=("front",))
    train_vla(data, tmp_path / "p", head="l1", obs="images", steps=3, horizon=2, image_size=(32, 32), val_episodes=1,
              **TINY)
    policy = load_policy(tmp_path / "p")
    assert policy.spec.cameras == ("front",) and policy.spec.image_size == (32, 32)
    o = obs(LEFT)
    o["images.front"] = np.zeros((1, 3, 32, 32), np.uint8)
    assert policy.predict(o).shape == (2, 3)
    with pytest.raises(PolicyError, match=r"images\.front"):
        policy.predict(obs(LEFT))
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    assert meta["kind"] == "vla" and meta["model"]["cameras"] == ["front"]
    assert meta["training"]["parameters"] == sum(p.numel() for p in policy.model.parameters())


def test_token_heads_decode_greedily_to_the_same_chunk_every_time(lang: Path, tmp_path: Path) -> None:
    train_vla(lang, tmp_path / "b", head="bins", bins="quantile", obs="state", state_keys=["observation.state"],
              steps=5, horizon=2, val_episodes=0, **TINY)
    policy = load_policy(tmp_path / "b")
    assert np.array_equal(policy.predict(obs(LEFT)), policy.predict(obs(LEFT)))
    assert json.loads((tmp_path / "b" / "policy.json").read_text())["action_tokens"]["quantile"]["format"]


def test_an_undecodable_fast_sequence_is_none_and_counted(lang: Path, tmp_path: Path) -> None:
    train_vla(lang, tmp_path / "f", head="fast", obs="state", state_keys=["observation.state"], steps=2, horizon=4,
              val_episodes=0, **TINY)
    policy = load_policy(tmp_path / "f")
    # An untrained decoder rarely says "end" where FAST needs it to: force a sequence with no end token.
    policy.model.head.out.bias.data[:] = 0
    policy.model.head.out.bias.data[0] = 1e4  # always piece 0, never the end token
    assert policy.predict(obs(LEFT)) is None
    assert policy.invalid_chunks == 1 and len(policy.inference_s) == 1


def test_flow_sampling_is_reproducible_from_the_seed(lang: Path, tmp_path: Path) -> None:
    train_vla(lang, tmp_path / "w", head="flow", obs="state", state_keys=["observation.state"], steps=2, horizon=2,
              val_episodes=0, flow_steps=3, **TINY)
    a, b = load_policy(tmp_path / "w"), load_policy(tmp_path / "w")
    assert np.array_equal(a.predict(obs(LEFT)), b.predict(obs(LEFT)))
    assert a.model.cfg.flow_steps == 3


def test_config_is_checked() -> None:
    with pytest.raises(PolicyError, match="unknown head"):
        VLAConfig(state_dim=3, action_dim=3, horizon=2, head="diffusion")
    with pytest.raises(PolicyError, match="needs action_vocab"):
        VLAConfig(state_dim=3, action_dim=3, horizon=2, head="bins")
    with pytest.raises(PolicyError, match="multiple of attention_heads"):
        VLAConfig(state_dim=3, action_dim=3, horizon=2, width=30, attention_heads=4)
    cfg = VLAConfig(state_dim=3, action_dim=2, horizon=5, cameras=("a",), image_size=(96, 96))
    assert cfg.image_grid == (6, 6)
    assert VLAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    model = VLAModel(cfg)
    out = model.act(torch.zeros(2, 3), {"a": torch.zeros(2, 3, 96, 96, dtype=torch.uint8)},
                    torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool))
    assert out.shape == (2, 5, 2)  # an empty instruction is allowed: every text position masked


# ---------------------------------------------------------------------- damaged checkpoints

@pytest.fixture(scope="module")
def fast_ckpt(lang: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "fast"
    train_vla(lang, out, head="fast", obs="state", state_keys=["observation.state"], steps=2, horizon=4,
              val_episodes=0, **TINY)
    return out


def copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / "text_tokenizer.json").unlink(), "text_tokenizer.json: missing"),
    (lambda d: _huge(d / "text_tokenizer.json"), "text_tokenizer.json: 17 MiB, far larger"),
    (lambda d: _fifo(d / "text_tokenizer.json"), "text_tokenizer.json: missing or not a regular file"),
    (lambda d: (d / "fast_tokenizer" / "fast_config.json").write_text("[1, 2"), "fast_tokenizer: "),
    (lambda d: (d / "fast_tokenizer" / "tokenizer.json").unlink(), "fast_tokenizer: "),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100]),
     "model.safetensors: corrupt or truncated"),
    (lambda d: _edit(d, lambda m: m["model"].update(width=1 << 20)), "model.width is 1048576"),
    (lambda d: _edit(d, lambda m: m["model"].update(head="bins")), "bins head needs its 'action_tokens'"),
    (lambda d: _edit(d, lambda m: m["model"].update(text_vocab=m["model"]["text_vocab"] + 1)),
     "different trainings"),
    (lambda d: _edit(d, lambda m: m.update(action_tokens=[1])), "'action_tokens' must be an object"),
    (lambda d: _edit(d, lambda m: m["action_tokens"].update(vocab=7)), "FAST vocabulary has"),
])
def test_every_damage_is_one_policy_error_naming_the_file(fast_ckpt: Path, tmp_path: Path, damage, match) -> None:
    d = copy(fast_ckpt, tmp_path / "c")
    damage(d)
    with pytest.raises(PolicyError, match=match) as e:
        load_policy(d)
    assert str(d) in str(e.value) and "\n" not in str(e.value)


def _huge(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.truncate(17 << 20)  # sparse: no 17 MiB written


def _fifo(path: Path) -> None:
    import os

    path.unlink()
    os.mkfifo(path)  # a read would block forever


def _edit(d: Path, change) -> None:
    meta = json.loads((d / "policy.json").read_text())
    change(meta)
    (d / "policy.json").write_text(json.dumps(meta))


def test_no_pickle_in_a_checkpoint(fast_ckpt: Path) -> None:
    names = sorted(p.relative_to(fast_ckpt).as_posix() for p in fast_ckpt.rglob("*") if p.is_file())
    assert names == ["fast_tokenizer/fast_config.json", "fast_tokenizer/tokenizer.json", "model.safetensors",
                     "policy.json", "text_tokenizer.json"]
    for name in names:
        if name.endswith(".json"):
            json.loads((fast_ckpt / name).read_text())


# ---------------------------------------------------------------------- the CLI

def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "telecorder"), *args], capture_output=True, text=True, timeout=600)


def test_cli_trains_a_vla_and_refuses_vla_options_for_bc(lang: Path, tmp_path: Path) -> None:
    proc = run("train", str(lang), "--out", str(tmp_path / "bc"), "--head", "flow", "--state-keys", "observation.state")
    assert proc.returncode == 2 and "--head: option(s) of --policy vla" in proc.stderr
    proc = run("train", str(lang), "--out", str(tmp_path / "v"), "--policy", "vla", "--head", "l1", "--bins",
               "quantile", "--obs", "state", "--state-keys", "observation.state")
    assert proc.returncode == 2 and "--bins applies to --head bins" in proc.stderr
    proc = run("train", str(lang), "--out", str(tmp_path / "v"), "--policy", "vla", "--head", "bins", "--obs", "state",
               "--state-keys", "observation.state", "--steps", "3", "--width", "32", "--layers", "1",
               "--decoder-layers", "1", "--max-episodes", "4", "--val-episodes", "1")
    assert proc.returncode == 0, proc.stderr
    assert "bins head" in proc.stdout and "action tokens per chunk" in proc.stdout
    meta = json.loads((tmp_path / "v" / "policy.json").read_text())
    assert meta["training"]["train_episodes"] == [0, 1, 2] and meta["training"]["val_episodes"] == [3]
    assert meta["model"]["width"] == 32 and meta["training"]["paraphrase"] == "random"
