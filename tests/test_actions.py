"""Action normalization, binning, FAST tokenization, chunking and action spaces."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from telecorder.actions import (
    ActionError,
    FASTTokenizer,
    Normalizer,
    QuantileBins,
    UniformBins,
    chunk_indices,
    history_indices,
    make_chunks,
)
from telecorder.actions import spaces as sp
from telecorder.datasets.stats import DatasetStats, FeatureStats

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)


# -- UniformBins vs OpenVLA ---------------------------------------------------------------


class _OpenVLAReference:
    """OpenVLA's ActionTokenizer arithmetic, transcribed (without the HF tokenizer)."""

    def __init__(self, vocab_size: int, bins: int = 256, min_action: int = -1, max_action: int = 1):
        self.vocab_size = vocab_size
        self.bins = np.linspace(min_action, max_action, bins)
        self.bin_centers = (self.bins[:-1] + self.bins[1:]) / 2.0
        self.min_action, self.max_action = min_action, max_action

    def token_ids(self, action: np.ndarray) -> np.ndarray:
        action = np.clip(action, a_min=float(self.min_action), a_max=float(self.max_action))
        discretized_action = np.digitize(action, self.bins)
        return self.vocab_size - discretized_action

    def decode_token_ids_to_actions(self, action_token_ids: np.ndarray) -> np.ndarray:
        discretized_actions = self.vocab_size - action_token_ids
        discretized_actions = np.clip(
            discretized_actions - 1, a_min=0, a_max=self.bin_centers.shape[0] - 1
        )
        return self.bin_centers[discretized_actions]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_uniform_bins_match_openvla_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    edges = np.linspace(-1, 1, 256)
    x = np.concatenate(
        [
            rng.uniform(-1.2, 1.2, 5000),
            [-1.0, 1.0, -1.0 - 1e-12, 1.0 + 1e-12, 0.0, -5.0, 5.0, np.inf, -np.inf],
            edges,
            np.nextafter(edges, 2),
            np.nextafter(edges, -2),
        ]
    ).astype(dtype)
    ref = _OpenVLAReference(vocab_size=32000)
    ub = UniformBins(256)
    ids = ub.to_token_ids(x, 32000)
    np.testing.assert_array_equal(ids, ref.token_ids(x))
    assert ub.encode(x).min() >= 1 and ub.encode(x).max() <= 256
    assert ub.encode(np.array([1.0]))[0] == 256 and ub.encode(np.array([-1.0]))[0] == 1
    dec = ub.from_token_ids(ids, 32000)
    ref_dec = ref.decode_token_ids_to_actions(ids)
    assert dec.dtype == ref_dec.dtype
    np.testing.assert_array_equal(dec, ref_dec)
    np.testing.assert_array_equal(ub.decode(ub.encode(x)), ref_dec)
    # Arbitrary ids (outside the action range) decode the same way too.
    any_ids = rng.integers(0, 32000, 1000)
    np.testing.assert_array_equal(ub.from_token_ids(any_ids, 32000), ref.decode_token_ids_to_actions(any_ids))


def test_uniform_bins_reject_nan_with_count():
    with pytest.raises(ValueError, match="2 NaN"):
        UniformBins().encode(np.array([0.1, np.nan, 0.3, np.nan]))


def test_quantile_bins_fit_encode_decode_save(tmp_path):
    rng = np.random.default_rng(1)
    x = np.stack([rng.normal(size=4000), rng.exponential(size=4000), np.full(4000, 0.5),
                  rng.integers(0, 3, 4000).astype(float)], axis=1)
    qb = QuantileBins(64).fit(x)
    assert qb.bins_per_dim[0] == 64 and qb.bins_per_dim[2] == 1 and qb.bins_per_dim[3] <= 3
    for e in qb.edges:
        assert (np.diff(e) > 0).all() or e.size == 2
    b = qb.encode(x)
    counts = np.bincount(b[:, 0], minlength=64)
    assert counts.min() > 0.5 * counts.mean()  # roughly equal occupancy
    dec = qb.decode(b)
    lo = np.stack([qb.edges[d][b[:, d]] for d in range(4)], 1)
    hi = np.stack([qb.edges[d][b[:, d] + 1] for d in range(4)], 1)
    np.testing.assert_allclose(dec, (lo + hi) / 2)
    assert ((x >= lo) & (x <= hi)).all()
    np.testing.assert_array_equal(dec[:, 2], 0.5)
    qb.save(tmp_path / "qb.json")
    qb2 = QuantileBins.load(tmp_path / "qb.json")
    np.testing.assert_array_equal(qb2.encode(x), b)
    with pytest.raises(ValueError, match="NaN"):
        qb.encode(np.full((1, 4), np.nan))


# -- Normalizer ---------------------------------------------------------------------------


def _stats(x: np.ndarray) -> dict:
    return {"mean": x.mean(0).tolist(), "std": x.std(0).tolist(), "min": x.min(0).tolist(),
            "max": x.max(0).tolist(), "q01": np.quantile(x, 0.01, axis=0).tolist(),
            "q99": np.quantile(x, 0.99, axis=0).tolist()}


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 20), st.integers(1, 5)), elements=finite),
       st.sampled_from(["mean_std", "min_max", "q99", "none"]))
def test_normalizer_inverse(x, mode):
    norm = Normalizer(mode, _stats(x))
    y = norm.normalize(x)
    back = norm.unnormalize(y)
    if mode == "q99":
        lo, hi = np.array(_stats(x)["q01"]), np.array(_stats(x)["q99"])
        x = np.clip(x, lo, hi)  # the exact inverse holds inside the bounds
        assert (np.abs(y) <= 1).all()
    scale = np.maximum(np.abs(x).max(), 1.0)
    # A value clipped to +-1 unnormalizes to the bound plus OpenVLA's eps (1e-8) in the denominator.
    bound_slack = 2e-8 if mode == "q99" else 0.0
    np.testing.assert_allclose(back, x, atol=1e-9 * scale + bound_slack, rtol=0)
    again = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(again.normalize(x), norm.normalize(x))


def test_q99_matches_openvla_and_mask_and_flat_dims():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(500, 4)) * [1, 2, 3, 1]
    x[:, 2] = 7.0  # a joint that never moved
    x[:, 3] = rng.integers(0, 2, 500)  # binary gripper
    fs = FeatureStats.from_array(x, name="action")
    norm = Normalizer("q99", fs, mask=[True, True, True, False])
    y = norm.normalize(x)
    s = fs.summary()
    lo, hi = np.array(s["q01"]), np.array(s["q99"])
    openvla = np.clip(2 * (x - lo) / (hi - lo + 1e-8) - 1, -1, 1)
    np.testing.assert_array_equal(y[:, :2], openvla[:, :2])
    np.testing.assert_array_equal(y[:, 2], 0.0)
    np.testing.assert_array_equal(y[:, 3], x[:, 3])  # masked: untouched
    back = norm.unnormalize(y)
    np.testing.assert_array_equal(back[:, 2], 7.0)
    np.testing.assert_array_equal(back[:, 3], x[:, 3])
    mm = Normalizer("min_max", fs)
    np.testing.assert_array_equal(mm.normalize(x)[:, 2], 0.0)
    assert mm.normalize(x)[:, :2].min() == -1.0


def test_normalizer_from_dataset_stats_forms_and_dtype():
    rng = np.random.default_rng(3)
    ds = DatasetStats.from_arrays({"action": rng.normal(size=(100, 3)).astype(np.float32)})
    a = Normalizer.from_dataset_stats(ds, mode="mean_std")
    b = Normalizer.from_dataset_stats(ds.to_json_dict(), feature="action", mode="mean_std")
    c = Normalizer.from_dataset_stats(ds.summary(), mode="mean_std")
    x = rng.normal(size=(5, 7, 3)).astype(np.float32)
    ya = a.normalize(x)
    assert ya.dtype == np.float32 and ya.shape == x.shape
    np.testing.assert_array_equal(ya, b.normalize(x))
    np.testing.assert_array_equal(ya, c.normalize(x))
    with pytest.raises(ActionError, match="no feature"):
        Normalizer.from_dataset_stats(ds, feature="state")
    with pytest.raises(ActionError, match="last dimension 3"):
        a.normalize(np.zeros((2, 4)))


def test_normalizer_torch_tensor():
    torch = pytest.importorskip("torch")
    norm = Normalizer("min_max", {"min": [0.0, -1.0], "max": [2.0, 1.0]})
    t = torch.tensor([[1.0, 0.5]])
    out = norm.normalize(t)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert torch.allclose(out, torch.tensor([[0.0, 0.5]]))


# -- FAST ---------------------------------------------------------------------------------


def _smooth_chunks(n: int = 200, t: int = 30, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    time_ = np.linspace(0, 1, t)[None, :, None, None]
    freq = rng.uniform(0.2, 2.0, (n, 1, d, 3))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, d, 3))
    amp = rng.uniform(0, 1, (n, 1, d, 3))
    x = (amp * np.sin(2 * np.pi * freq * time_ + phase)).sum(-1)
    return x / np.abs(x).max(axis=(0, 1))  # normalized to [-1, 1] per dimension


@pytest.fixture(scope="module")
def fast_fitted():
    x = _smooth_chunks()
    return FASTTokenizer(scale=10.0, vocab_size=1024).fit(x), x


def test_fast_round_trip_and_compression(fast_fitted):
    tok, x = fast_fitted
    t0 = time.perf_counter()
    ids = tok.encode(x)
    t1 = time.perf_counter()
    y = tok.decode(ids, time_horizon=30, action_dim=6)
    t2 = time.perf_counter()
    err = np.abs(y - x).max()
    ratio = 30 * 6 / np.mean([len(i) for i in ids])
    print(f"FAST max abs err {err:.4f}, compression x{ratio:.2f}, "
          f"encode {len(x) / (t1 - t0):.0f} chunks/s, decode {len(x) / (t2 - t1):.0f} chunks/s")
    assert err <= 0.1
    # Rounding error per coefficient <= 0.5 / scale; orthonormal DCT keeps the L2 norm.
    assert np.sqrt(((y - x) ** 2).sum(axis=1)).max() <= 0.5 / 10 * np.sqrt(30) + 1e-9
    assert ratio > 3
    # Held-out chunks (scaled on their own, so coefficients may be clipped) still decode.
    x2 = _smooth_chunks(50, seed=1)
    assert np.abs(tok.decode(tok.encode(x2)) - x2).max() <= 0.2


def test_fast_save_load_identical(fast_fitted, tmp_path):
    tok, x = fast_fitted
    tok.save(tmp_path / "fast")
    assert {p.name for p in (tmp_path / "fast").iterdir()} == {"tokenizer.json", "fast_config.json"}
    tok2 = FASTTokenizer.load(tmp_path / "fast")
    ids = tok.encode(x)
    assert tok2.encode(x) == ids
    np.testing.assert_array_equal(tok2.decode(ids), tok.decode(ids))


def test_fast_corrupt_tokens(fast_fitted):
    tok, x = fast_fitted
    ids = tok.encode(x[:3])
    bad = [ids[0][:-1], ids[1], [*ids[2], 10**6]]
    with pytest.raises(ValueError, match="chunk 0 of 3: tokens decode to"):
        tok.decode(bad)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.decode([bad[2]])
    out, ok = tok.try_decode([*bad, []])
    assert ok.tolist() == [False, True, False, False]
    np.testing.assert_array_equal(out[~ok], 0.0)
    np.testing.assert_allclose(out[1], x[1], atol=0.1)


def test_fast_with_fitted_q99_normalizer(tmp_path):
    raw = _smooth_chunks(100, t=20, d=3) * [[[0.5, 2.0, 30.0]]] + [[[0.0, 1.0, -5.0]]]
    tok = FASTTokenizer().fit(raw, normalizer="q99")
    ids = tok.encode(raw)
    back = tok.decode(ids)
    clipped = tok.normalizer.unnormalize(tok.normalizer.normalize(raw))
    span = np.array([0.5, 2.0, 30.0]) * 2
    assert (np.abs(back - clipped).max(axis=(0, 1)) <= 0.1 * span / 2 + 1e-9).all()
    tok.save(tmp_path)
    np.testing.assert_array_equal(FASTTokenizer.load(tmp_path).decode(ids), back)


def test_fast_rejects_unnormalized_range():
    with pytest.raises(ActionError, match="normalize"):
        FASTTokenizer(vocab_size=256).fit(_smooth_chunks(20) * 100)


# -- chunking -----------------------------------------------------------------------------


def test_chunk_and_history_indices():
    idx, pad = chunk_indices(10, 7, 5)
    assert idx.tolist() == [7, 8, 9, 9, 9] and pad.tolist() == [False] * 3 + [True] * 2
    idx, pad = history_indices(1, 3)
    assert idx.tolist() == [0, 0, 1] and pad.tolist() == [True, False, False]
    with pytest.raises(ActionError):
        chunk_indices(10, 10, 2)


def test_make_chunks_padding_per_dim():
    a = np.arange(12, dtype=np.float32).reshape(4, 3) + 1
    chunks, mask = make_chunks(a, 3, pad=["repeat_last", "zero", "repeat_last"])
    assert chunks.shape == (4, 3, 3) and chunks.dtype == np.float32
    assert mask.tolist() == [[True] * 3, [True] * 3, [True, True, False], [True, False, False]]
    np.testing.assert_array_equal(chunks[3, :, 0], [10, 10, 10])
    np.testing.assert_array_equal(chunks[3, :, 1], [11, 0, 0])
    np.testing.assert_array_equal(chunks[1], a[1:4])
    z, _ = make_chunks(a, 2, pad="zero")
    np.testing.assert_array_equal(z[3, 1], 0)
    for t in range(4):
        _, pad = chunk_indices(4, t, 3)
        np.testing.assert_array_equal(mask[t], ~pad)


# -- spaces -------------------------------------------------------------------------------

angles = arrays(np.float64, (8, 3), elements=st.floats(-np.pi, np.pi, allow_nan=False))
orders = st.sampled_from(["xyz", "xzy", "yxz", "yzx", "zxy", "zyx",
                          "XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])


@settings(max_examples=80, deadline=None)
@given(angles, orders)
def test_euler_matrix_quat_rot6d_round_trips(ang, order):
    r = sp.euler_to_matrix(ang, order)
    np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(sp.euler_to_matrix(sp.matrix_to_euler(r, order), order), r, atol=1e-9)
    q = sp.matrix_to_quat(r)
    assert (q[:, 0] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(sp.quat_to_matrix(q), r, atol=1e-9)
    np.testing.assert_allclose(sp.euler_to_matrix(sp.quat_to_euler(sp.euler_to_quat(ang, order), order), order), r, atol=1e-9)
    np.testing.assert_allclose(sp.rot6d_to_matrix(sp.matrix_to_rot6d(r)), r, atol=1e-12)
    np.testing.assert_array_equal(sp.xyzw_to_wxyz(sp.wxyz_to_xyzw(q)), q)


def test_euler_conventions():
    a, b, c = 0.3, -0.7, 1.1
    rx, ry, rz = (sp.euler_to_matrix(np.array(v), "xyz") for v in ([a, 0, 0], [0, b, 0], [0, 0, c]))
    np.testing.assert_allclose(rx, [[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    # Extrinsic xyz = Rz Ry Rx; intrinsic ZYX (yaw, pitch, roll) is the same rotation.
    np.testing.assert_allclose(sp.euler_to_matrix(np.array([a, b, c]), "xyz"), rz @ ry @ rx)
    np.testing.assert_allclose(sp.euler_to_matrix(np.array([c, b, a]), "ZYX"), rz @ ry @ rx)
    np.testing.assert_allclose(sp.matrix_to_euler(rz @ ry @ rx, "ZYX"), [c, b, a])
    q = sp.euler_to_quat(np.array([0, 0, np.pi / 2]), "xyz")
    np.testing.assert_allclose(q, [np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)])
    np.testing.assert_allclose(sp.wxyz_to_xyzw(q), [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    with pytest.raises(ActionError):
        sp.euler_to_matrix(np.zeros(3), "xYz")


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (4, 5, 3), elements=finite), arrays(np.float64, (4, 3), elements=finite))
def test_delta_round_trip(actions, states):
    mask = [True, True, False]
    d = sp.to_delta(actions, states, mask)
    np.testing.assert_array_equal(d[..., 2], actions[..., 2])
    np.testing.assert_allclose(d[..., :2], actions[..., :2] - states[:, None, :2])
    np.testing.assert_allclose(sp.to_absolute(d, states, mask), actions, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, 10, elements=st.floats(0, 0.08)))
def test_gripper_round_trips(x):
    y = sp.rescale_gripper(x, (0, 0.08), (-1, 1))
    assert (y >= -1 - 1e-12).all() and (y <= 1 + 1e-12).all()
    np.testing.assert_allclose(sp.rescale_gripper(y, (-1, 1), (0, 0.08)), x, atol=1e-15)
    np.testing.assert_allclose(sp.flip_gripper(sp.flip_gripper(y, (-1, 1)), (-1, 1)), y)
    np.testing.assert_allclose(sp.flip_gripper(np.array([0.0, 1.0])), [1.0, 0.0])
