"""Tests for the mergeable per-feature statistics behind ``meta/stats.json``."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from telecorder.datasets import stats as stats_mod
from telecorder.datasets.stats import (
    DEFAULT_ALPHA,
    STATS_FORMAT,
    ZERO_FLOOR,
    DatasetStats,
    FeatureStats,
    StatsError,
)
from telecorder.errors import DatasetError

QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)

# Mix ordinary magnitudes with values at and around the zero floor, where bucketing
# changes regime, and repeated values, which stress ties in the rank convention. Magnitudes
# below 1e-150 become 0: their squares are subnormal, so no variance of them (ours or numpy's)
# keeps 9 significant digits, and the std comparison would fail on rounding, not on the merge.
_element = st.one_of(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(lambda x: 0.0 if abs(x) < 1e-150 else x),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-10, -1e-10, ZERO_FLOOR, -ZERO_FLOOR, 2.5e-9]),
)


@st.composite
def split_arrays(draw: st.DrawFn) -> tuple[np.ndarray, list[np.ndarray]]:
    """A (N, D) array and a random split of its rows into parts (empty parts allowed)."""
    ndim = draw(st.integers(1, 3))
    n = draw(st.integers(1, 40))
    data = draw(hnp.arrays(np.float64, (n, ndim), elements=_element))
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    return data, np.split(data, cuts)


def _bound(x: np.ndarray, alpha: float = DEFAULT_ALPHA) -> np.ndarray:
    """The documented quantile error bound, with slack for float64 rounding."""
    return np.maximum(alpha * np.abs(x) * (1 + 1e-9), ZERO_FLOOR)


def _assert_close_moments(a: FeatureStats, b: FeatureStats, data: np.ndarray) -> None:
    scale = max(float(np.abs(data).max()), ZERO_FLOOR)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-9, atol=1e-12 * scale)
    np.testing.assert_allclose(a.std, b.std, rtol=1e-9, atol=1e-9 * scale)


def _sketch(f: FeatureStats) -> dict:
    return f.to_dict()["sketch"]


# -- merging -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(split_arrays())
def test_merge_of_parts_equals_stats_of_concatenation(case):
    data, parts = case
    whole = FeatureStats.from_array(data, name="x")
    merged = functools.reduce(
        FeatureStats.merge, [FeatureStats.from_array(p, name="x") for p in parts]
    )
    assert merged.count == whole.count == data.shape[0]
    np.testing.assert_array_equal(merged.min, data.min(axis=0))
    np.testing.assert_array_equal(merged.max, data.max(axis=0))
    np.testing.assert_allclose(whole.mean, data.mean(axis=0), rtol=1e-9, atol=1e-6)
    _assert_close_moments(merged, whole, data)
    np.testing.assert_allclose(
        merged.std, data.std(axis=0), rtol=1e-9, atol=1e-9 * np.abs(data).max()
    )
    assert _sketch(merged) == _sketch(whole)
    for q in QS:
        np.testing.assert_array_equal(merged.quantile(q), whole.quantile(q))


@settings(max_examples=75, deadline=None)
@given(split_arrays(), st.randoms(use_true_random=False))
def test_merge_order_does_not_matter(case, rnd):
    data, parts = case
    pieces = [FeatureStats.from_array(p) for p in parts]
    left_fold = functools.reduce(FeatureStats.merge, pieces)
    shuffled = pieces[:]
    rnd.shuffle(shuffled)
    # Pairwise (tree) merging of a shuffled order exercises associativity too.
    while len(shuffled) > 1:
        shuffled = [
            shuffled[i].merge(shuffled[i + 1]) if i + 1 < len(shuffled) else shuffled[i]
            for i in range(0, len(shuffled), 2)
        ]
    tree = shuffled[0]
    assert tree.count == left_fold.count
    np.testing.assert_array_equal(tree.min, left_fold.min)
    np.testing.assert_array_equal(tree.max, left_fold.max)
    _assert_close_moments(tree, left_fold, data)
    assert _sketch(tree) == _sketch(left_fold)
    for q in QS:
        np.testing.assert_array_equal(tree.quantile(q), left_fold.quantile(q))


def test_merge_of_many_episodes_matches_numpy():
    rng = np.random.default_rng(1)
    episodes = [rng.normal(3.0, 0.5, size=(int(rng.integers(50, 400)), 6)) for _ in range(10)]
    merged = functools.reduce(FeatureStats.merge, map(FeatureStats.from_array, episodes))
    data = np.concatenate(episodes)
    np.testing.assert_allclose(merged.mean, data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(merged.std, data.std(axis=0), rtol=1e-12)


def test_sketch_merge_is_exact_on_the_wide_index_path(monkeypatch):
    """The sort-based fallback (used when a dense histogram would be huge) agrees exactly."""
    rng = np.random.default_rng(2)
    data = rng.standard_cauchy(size=(500, 3)) * 10.0 ** rng.integers(-12, 12, size=(500, 3))
    dense = FeatureStats.from_array(data)
    monkeypatch.setattr(stats_mod, "_MAX_DENSE_BINS", 0)
    data[:3] = [[1e-150, -1e150, 1.0]] * 3  # span far beyond 2 * size bins: forces the sort
    wide = FeatureStats.from_array(data)
    monkeypatch.undo()
    assert _sketch(FeatureStats.from_array(data)) == _sketch(wide)
    assert _sketch(dense) != _sketch(wide)


# -- quantile accuracy ---------------------------------------------------------------


def _datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    n = 5000
    return {
        "normal": rng.normal(0.2, 1.5, size=(n, 3)),
        "uniform": rng.uniform(-1.0, 4.0, size=(n, 3)),
        "heavy_tailed": rng.standard_cauchy(size=(n, 3)) * 100.0,
        "pareto": rng.pareto(1.2, size=(n, 3)) + 1.0,
        "constant": np.full((n, 3), 0.7),
        "negative": -rng.lognormal(0.0, 2.0, size=(n, 3)),
        "mixed_sign": np.concatenate(
            [rng.normal(-5, 1, size=(n // 2, 3)), rng.exponential(3, size=(n - n // 2, 3))]
        ),
        "near_zero": rng.normal(0.0, 3e-9, size=(n, 3)),
        "float32_joints": rng.uniform(-np.pi, np.pi, size=(n, 3)).astype(np.float32),
        "integers": rng.integers(-3, 1000, size=(n, 3)),
    }


@pytest.mark.parametrize("kind", list(_datasets()))
def test_quantiles_within_documented_bound(kind):
    data = _datasets()[kind]
    values = data.astype(np.float64)
    # Episodes of different lengths, merged, must keep the single-sketch guarantee.
    parts = np.array_split(data, [700, 701, 3000])
    stats = functools.reduce(FeatureStats.merge, map(FeatureStats.from_array, parts))
    for q in (*QS, 0.001, 0.3333, 0.999):
        truth = np.quantile(values, q, axis=0, method="inverted_cdf")
        got = stats.quantile(q)
        assert np.all(np.abs(got - truth) <= _bound(truth)), (kind, q, got, truth)
        assert np.all((got >= values.min(axis=0)) & (got <= values.max(axis=0)))


@settings(max_examples=100, deadline=None)
@given(
    hnp.arrays(
        np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=60), elements=_element
    ),
    st.floats(0.0, 1.0),
    st.sampled_from([0.001, 0.005, 0.05]),
)
def test_quantile_bound_holds_for_any_data(data, q, alpha):
    stats = FeatureStats.from_array(data, alpha=alpha)
    truth = np.quantile(data, q, axis=0, method="inverted_cdf")
    assert np.all(np.abs(stats.quantile(q) - truth) <= _bound(truth, alpha))


def test_extreme_quantiles_are_exact_min_and_max():
    data = np.random.default_rng(4).normal(size=(1000, 4))
    stats = FeatureStats.from_array(data)
    np.testing.assert_array_equal(stats.quantile(0.0), data.min(axis=0))
    np.testing.assert_array_equal(stats.quantile(1.0), data.max(axis=0))


def test_bucket_count_grows_with_log_range_not_with_data():
    data = np.random.default_rng(5).uniform(1.0, 10.0, size=(100_000, 1))
    n_buckets = len(_sketch(FeatureStats.from_array(data))["dims"][0]["pos"]["cnt"])
    gamma = (1 + DEFAULT_ALPHA) / (1 - DEFAULT_ALPHA)
    assert n_buckets <= np.ceil(np.log(10.0) / np.log(gamma)) + 1


def test_quantile_rejects_q_outside_unit_interval():
    stats = FeatureStats.from_array(np.arange(10.0))
    with pytest.raises(ValueError, match="q must be in"):
        stats.quantile(1.5)


# -- shapes and summaries ------------------------------------------------------------


def test_scalar_rows_give_length_one_lists():
    stats = FeatureStats.from_array(np.arange(5, dtype=np.float64) * 0.1, name="timestamp")
    summary = stats.summary()
    assert summary["count"] == 5
    assert summary["min"] == [0.0]
    assert summary["max"] == [0.4]
    assert summary["mean"] == pytest.approx([0.2])
    assert stats.mean.shape == (1,)
    assert set(summary) == {"count", "mean", "std", "min", "max", "q01", "q99"}


def test_multi_dim_rows_give_nested_lists():
    data = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    stats = FeatureStats.from_array(data)
    assert stats.shape == (2, 3)
    assert stats.mean.shape == (2, 3)
    assert stats.summary()["max"] == data.max(axis=0).tolist()
    assert stats.summary()["q99"] == data.max(axis=0).tolist()


def test_summary_quantiles_match_quantile_method():
    stats = FeatureStats.from_array(np.random.default_rng(6).normal(size=(300, 6)))
    summary = stats.summary()
    assert summary["q01"] == stats.quantile(0.01).tolist()
    assert summary["q99"] == stats.quantile(0.99).tolist()
    assert summary["std"] == stats.std.tolist()


# -- serialization -------------------------------------------------------------------


def _episode(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    return {
        "observation.state": rng.normal(size=(n, 6)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(n, 6)).astype(np.float32),
        "timestamp": np.arange(n) / 30.0,
    }


def test_json_round_trip_is_exact_and_still_mergeable():
    rng = np.random.default_rng(7)
    stats = DatasetStats.from_arrays(_episode(rng, 200)).merge(
        DatasetStats.from_arrays(_episode(rng, 150))
    )
    doc = json.loads(json.dumps(stats.to_json_dict()))
    assert doc["format"] == STATS_FORMAT
    assert doc["quantile_error"] == {"relative": DEFAULT_ALPHA, "absolute_floor": ZERO_FLOOR}
    loaded = DatasetStats.from_json_dict(doc)
    assert loaded.summary() == stats.summary()
    assert loaded.to_json_dict() == stats.to_json_dict()
    for name in stats:
        assert loaded[name].same_state(stats[name])
        assert loaded[name].name == name

    nxt = DatasetStats.from_arrays(_episode(rng, 90))
    assert loaded.merge(nxt).to_json_dict() == stats.merge(nxt).to_json_dict()


def test_dataset_merge_takes_union_of_features():
    rng = np.random.default_rng(8)
    a = DatasetStats.from_arrays({"action": rng.normal(size=(10, 2))})
    b = DatasetStats.from_arrays(
        {"action": rng.normal(size=(5, 2)), "reward": rng.normal(size=(5,))}
    )
    merged = a.merge(b)
    assert list(merged) == ["action", "reward"]
    assert merged["action"].count == 15
    assert merged["reward"].count == 5
    assert len(merged) == 2
    assert set(merged.summary()) == {"action", "reward"}


def test_unknown_format_is_rejected_clearly():
    with pytest.raises(ValueError, match="unknown stats format 'lerobot/2'"):
        DatasetStats.from_json_dict({"format": "lerobot/2", "features": {}})
    with pytest.raises(ValueError, match="JSON object"):
        DatasetStats.from_json_dict([])  # type: ignore[arg-type]


def test_malformed_feature_state_names_the_feature():
    doc = DatasetStats.from_arrays({"action": np.ones((4, 2))}).to_json_dict()
    doc["features"]["action"]["sketch"]["dims"][0]["zero"] = 3
    with pytest.raises(ValueError, match=r"feature 'action'.*do not add up"):
        DatasetStats.from_json_dict(doc)
    doc["features"]["action"]["sketch"]["dims"][0]["zero"] = 0
    del doc["features"]["action"]["m2"]
    with pytest.raises(ValueError, match=r"feature 'action'.*missing key 'm2'"):
        DatasetStats.from_json_dict(doc)


def test_typical_stats_json_stays_small():
    rng = np.random.default_rng(9)
    total = functools.reduce(
        FeatureStats.merge,
        (FeatureStats.from_array(rng.normal(size=(600, 6)).astype(np.float32)) for _ in range(10)),
    )
    assert len(json.dumps(total.to_dict())) < 60_000


# -- bad input and empty data ---------------------------------------------------------


def test_non_finite_values_raise_with_feature_name_and_count():
    data = np.zeros((10, 6), dtype=np.float32)
    data[1, 2] = np.nan
    data[3, :2] = np.nan
    data[5, 5] = -np.inf
    with pytest.raises(
        ValueError, match=r"'observation.state': 4 non-finite values \(3 NaN, 1 inf\)"
    ):
        FeatureStats.from_array(data, name="observation.state")
    with pytest.raises(DatasetError):
        DatasetStats.from_arrays({"action": data})


def test_shape_mismatch_names_both_shapes():
    a = FeatureStats.from_array(np.zeros((3, 6)), name="action")
    b = FeatureStats.from_array(np.zeros((3, 7)), name="action")
    with pytest.raises(ValueError, match=r"'action'.*\(6,\).*\(7,\)"):
        a.merge(b)
    with pytest.raises(ValueError, match="different accuracy"):
        a.merge(FeatureStats.from_array(np.zeros((3, 6)), alpha=0.01))


def test_non_numeric_and_rowless_input_is_rejected():
    with pytest.raises(ValueError, match="numeric"):
        FeatureStats.from_array(np.array(["a", "b"]), name="task")
    with pytest.raises(ValueError, match="scalar"):
        FeatureStats.from_array(np.float64(1.0))
    with pytest.raises(ValueError, match="hold no values"):
        FeatureStats.from_array(np.zeros((5, 0)))


def test_empty_array_gives_merge_identity():
    data = np.random.default_rng(10).normal(size=(20, 6))
    empty = FeatureStats.from_array(np.zeros((0, 6)), name="action")
    full = FeatureStats.from_array(data, name="action")
    assert empty.count == 0
    assert empty.merge(full).same_state(full)
    assert full.merge(empty).same_state(full)
    summary = empty.summary()
    assert summary == {"count": 0, **dict.fromkeys(("mean", "std", "min", "max", "q01", "q99"))}
    with pytest.raises(ValueError, match="no values"):
        _ = empty.mean
    with pytest.raises(ValueError, match="no values"):
        empty.quantile(0.5)
    doc = json.loads(json.dumps(DatasetStats({"action": empty}).to_json_dict()))
    assert DatasetStats.from_json_dict(doc)["action"].same_state(empty)


def test_stats_errors_are_value_errors_and_dataset_errors():
    assert issubclass(StatsError, ValueError)
    assert issubclass(StatsError, DatasetError)


def test_moment_overflow_raises_instead_of_returning_inf():
    with pytest.raises(StatsError, match="too large"):
        FeatureStats.from_array(np.array([1e200, -1e200]), name="x")
    a = FeatureStats.from_array(np.array([1.5e308]))
    b = FeatureStats.from_array(np.array([-1.5e308]))
    with pytest.raises(StatsError, match="overflow"):
        a.merge(b)


# -- exact quantiles (what Octo and OpenVLA compute) and the sketch's rank error -------------------


def _episodes_with_a_gripper(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n in rng.integers(20, 200, size=12):
        x = rng.normal(size=(n, 4)) * [0.01, 1.0, 30.0, 1.0]
        x[:, 3] = rng.uniform(size=n) < 0.6  # a binarized gripper: 0 = closed, 1 = open
        out.append(x.astype(np.float32))
    return out


def test_exact_quantiles_are_np_quantile_and_the_gripper_bound_is_1() -> None:
    from telecorder.datasets.exact_quantiles import ExactValues

    episodes = _episodes_with_a_gripper()
    every = np.concatenate(episodes)
    values = ExactValues(4)
    for ep in episodes:
        values.add(ep)
    for q in (0.0, 0.01, 0.25, 0.5, 0.99, 1.0):
        # Octo: np.quantile(actions, 0.99, 0) on the float32 arrays; OpenVLA: np.quantile(x, 0.99, axis=0).
        want = np.quantile(every, q, 0)
        got = values.quantile(q)
        assert got.dtype == want.dtype == np.float32 and got.tolist() == want.tolist(), q
    assert values.quantile(0.99)[3] == 1.0 and values.quantile(0.01)[3] == 0.0
    # The sketch alone puts the open gripper at 1 - alpha: the 1.8%-of-range error this replaces.
    sketch = FeatureStats.from_array(every)
    assert sketch.quantile(0.99)[3] == pytest.approx(1.0 - DEFAULT_ALPHA)
    # The order in which parts arrive does not matter.
    other = ExactValues(4)
    for ep in reversed(episodes):
        other.add(ep)
    assert other.quantile(0.01).tolist() == values.quantile(0.01).tolist()


def test_exact_values_past_their_limit_and_as_files(tmp_path) -> None:
    from telecorder.datasets.exact_quantiles import ExactValues

    episodes = _episodes_with_a_gripper(1)
    small = ExactValues(4, limit=4 * 100)
    for ep in episodes:
        small.add(ep)
    assert not small.exact and small.count == sum(len(e) for e in episodes)
    with pytest.raises(StatsError, match="limit"):
        small.quantile(0.5)
    merged = ExactValues(4)
    merged.extend(small)
    assert not merged.exact and merged.count == small.count

    kept = ExactValues(4)
    kept.add(episodes[0])
    kept.save(tmp_path / "v.npy")
    back = ExactValues.load(tmp_path / "v.npy", ndim=4, rows=len(episodes[0]))
    assert back.quantile(0.99).tolist() == kept.quantile(0.99).tolist()
    with pytest.raises(StatsError, match=r"v\.npy: saved values are float32\[.*expected float32\[3, 4\]"):
        ExactValues.load(tmp_path / "v.npy", ndim=4, rows=3)
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(StatsError, match=r"bad\.npy: unreadable"):
        ExactValues.load(tmp_path / "bad.npy", ndim=4, rows=3)


@settings(max_examples=60, deadline=None)
@given(split_arrays(), st.sampled_from((0.0, 0.01, 0.3, 0.99, 1.0)))
def test_sketch_rank_error_bounds_the_rank_of_its_quantile(parts: tuple[np.ndarray, list[np.ndarray]], q: float) -> None:
    data, _ = parts
    fs = FeatureStats.from_array(data)
    got, err = fs.quantile(q), fs.quantile_rank_error(q)
    target = np.quantile(data, q, axis=0, method="inverted_cdf")
    n = len(data)
    for d in range(data.shape[1]):
        # Values at or below the written bound vs at or below the order statistic it targets.
        below_got = np.count_nonzero(data[:, d] <= got[d]) / n
        below_target = np.count_nonzero(data[:, d] <= target[d]) / n
        assert abs(below_got - below_target) <= err[d] + 1e-12, (d, got[d], target[d], err[d])
        assert 0.0 <= err[d] <= 1.0
