"""Social outcome measures (Perolat et al. 2017) and the batched EpisodeTracker."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ssdinfluence.metrics import (
    OUTCOME_KEYS,
    EpisodeTracker,
    efficiency,
    equality,
    influence_statistics,
    instantaneous_coordination,
    mutual_information,
    peace,
    social_outcomes,
    speaker_consistency,
    sustainability,
)

# ---------------------------------------------------------------------------- efficiency


def test_efficiency_hand_computed():
    # (3 + 5 + 0 + 2) / 10 = 1.0
    assert efficiency([3, 5, 0, 2], 10) == pytest.approx(1.0)
    # batched: (1 + 2) / 2 = 1.5 ; (3 + 4) / 7 = 1.0
    out = efficiency(np.array([[1, 2], [3, 4]], np.float32), np.array([2, 7]))
    assert out.dtype == np.float64 and out.shape == (2,)
    np.testing.assert_allclose(out, [1.5, 1.0])
    # negative collective return: (-4 + 1) / 3 = -1.0
    assert efficiency([-4, 1], 3) == pytest.approx(-1.0)


def test_efficiency_rejects_non_positive_length():
    with pytest.raises(ValueError, match="episode_length"):
        efficiency([1, 2], 0)
    with pytest.raises(ValueError, match="returns"):
        efficiency(np.zeros((2, 0)), 1)


# ---------------------------------------------------------------------------- equality


def test_equality_hand_computed():
    # [1, 3]: sum_ij |Ri - Rj| = |1-3| + |3-1| = 4 ; 2 N sum = 2*2*4 = 16 ; E = 1 - 4/16 = 0.75
    assert equality([1, 3]) == pytest.approx(0.75)
    # [0, 0, 4]: ordered pairs with a difference: (0,4) x2, (4,0) x2 -> 16 ; 2*3*4 = 24 ; E = 1/3
    assert equality([0, 0, 4]) == pytest.approx(1 / 3)
    # [1, 2, 3, 4]: unordered diffs 1+2+3+1+2+1 = 10, ordered 20 ; 2*4*10 = 80 ; E = 0.75
    assert equality([1, 2, 3, 4]) == pytest.approx(0.75)
    # one agent takes everything, N = 5: [10,0,0,0,0]: ordered diffs 2*4*10 = 80 ; 2*5*10 = 100 ; E = 0.2 = 1/N
    assert equality([10, 0, 0, 0, 0]) == pytest.approx(0.2)


def test_equality_edge_cases():
    # all equal -> exactly 1.0, whatever the sign, zero total included, and N = 1
    for returns in ([2, 2, 2], [0, 0, 0], [-1, -1], [5], [0]):
        assert equality(returns) == 1.0
    # unequal with a zero or negative total -> NaN
    assert np.isnan(equality([1, -1]))       # total 0
    assert np.isnan(equality([-3, 1]))       # total -2
    assert np.isnan(equality([0, -2, 0]))    # total -2
    # positive total with a negative return: formula as is, not clipped
    # [-1, 3]: diffs 2*4 = 8 ; 2*2*2 = 8 ; E = 0
    assert equality([-1, 3]) == pytest.approx(0.0)
    # [-5, 6]: diffs 2*11 = 22 ; 2*2*1 = 4 ; E = 1 - 5.5 = -4.5
    assert equality([-5, 6]) == pytest.approx(-4.5)


def test_equality_vectorised_over_leading_dims():
    returns = np.array([[[1, 3], [0, 0]], [[1, -1], [2, 2]]], np.float32)  # [2, 2, N=2]
    out = equality(returns)
    assert out.shape == (2, 2) and out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.75, 1.0], [np.nan, 1.0]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_equality_properties_for_non_negative_returns(values, rnd):
    returns = np.array(values, np.float64)
    value = float(equality(returns))
    if returns.sum() == 0:
        assert value == 1.0  # all zero, so all equal
        return
    assert 0.0 <= value <= 1.0 + 1e-12
    assert value >= 1.0 / len(values) - 1e-12  # one agent taking everything is the minimum
    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert float(equality(shuffled)) == pytest.approx(value)         # permutation invariant
    assert float(equality(returns * 3.5)) == pytest.approx(value)    # scale invariant


# ---------------------------------------------------------------------------- sustainability


def test_sustainability_hand_computed():
    # agent 0 rewarded at t = 4 and 6 -> mean 5 ; agent 1 never (excluded) ; agent 2 at 2,3,4 -> 3
    # S = (5 + 3) / 2 = 4
    assert sustainability([10, 0, 9], [2, 0, 3]) == pytest.approx(4.0)
    # one agent rewarded once at t = 0 -> 0.0
    assert sustainability([0, 0], [1, 0]) == 0.0
    # nobody rewarded -> NaN
    assert np.isnan(sustainability([0, 0, 0], [0, 0, 0]))
    # batched [2, N=2]: (1/1 + 9/3)/2 = 2 ; (nobody) NaN
    out = sustainability(np.array([[1, 9], [0, 0]]), np.array([[1, 3], [0, 0]]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [2.0, np.nan])


def test_sustainability_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        sustainability([1, 2], [1])
    with pytest.raises(ValueError, match="non-negative"):
        sustainability([1, 2], [1, -1])


# ---------------------------------------------------------------------------- peace


def test_peace_hand_computed():
    # nobody tagged out: (5*1000 - 0) / 1000 = 5
    assert peace(5, 1000) == 5.0
    # 250 agent-steps tagged out: (5000 - 250) / 1000 = 4.75
    assert peace(5, 1000, 250) == pytest.approx(4.75)
    # vectorised: (2*4 - [0, 4]) / 4 = [2, 1]
    np.testing.assert_allclose(peace(2, np.array([4, 4]), np.array([0, 4])), [2.0, 1.0])


def test_peace_rejects_bad_input():
    for args in ((0, 10), (2.5, 10), (True, 10), (2, 0), (2, 10, -1), (2, 10, 21)):
        with pytest.raises(ValueError):
            peace(*args)


# ---------------------------------------------------------------------------- social_outcomes

# A deterministic 2-agent episode of T = 4 steps (rows are t = 0..3):
EPISODE = np.array([[1, 0], [0, 0], [1, 1], [0, -1]], np.float32)


def test_social_outcomes_deterministic_episode():
    # returns: agent 0: 1+0+1+0 = 2 ; agent 1: 0+0+1-1 = 0
    # positive rewards: agent 0 at t = 0, 2 (sum 2, count 2) ; agent 1 at t = 2 (sum 2, count 1)
    out = social_outcomes([2, 0], 4, [2, 2], [2, 1])
    assert set(out) == set(OUTCOME_KEYS)
    assert out["efficiency"] == pytest.approx(0.5)       # 2 / 4
    assert out["equality"] == pytest.approx(0.5)         # 1 - (2+2) / (2*2*2)
    assert out["sustainability"] == pytest.approx(1.5)   # (2/2 + 2/1) / 2
    assert out["peace"] == 2.0                           # (2*4 - 0) / 4


def test_social_outcomes_vectorised():
    returns = np.array([[2, 0], [1, 3], [0, 0]], np.float32)
    out = social_outcomes(returns, np.array([4, 2, 5]), np.array([[2, 2], [0, 3], [0, 0]]),
                          np.array([[2, 1], [1, 1], [0, 0]]))
    for key in OUTCOME_KEYS:
        assert out[key].shape == (3,) and out[key].dtype == np.float64
    np.testing.assert_allclose(out["efficiency"], [0.5, 2.0, 0.0])
    np.testing.assert_allclose(out["equality"], [0.5, 0.75, 1.0])
    np.testing.assert_allclose(out["sustainability"], [1.5, 1.5, np.nan])  # (0/1 + 3/1)/2 = 1.5
    np.testing.assert_allclose(out["peace"], [2.0, 2.0, 2.0])
    with pytest.raises(ValueError, match="shape"):
        social_outcomes(returns, 4, np.zeros((3, 3)), np.zeros((3, 2)))


# ---------------------------------------------------------------------------- EpisodeTracker


def test_tracker_deterministic_episode():
    tracker = EpisodeTracker(num_envs=1, num_agents=2)
    for t, row in enumerate(EPISODE):
        result = tracker.update(row[None], np.array([t == 3]))
        if t < 3:
            assert result is None
    assert result["env_index"].tolist() == [0]
    assert result["returns"].dtype == np.float32 and result["returns"].tolist() == [[2.0, 0.0]]
    assert result["length"].tolist() == [4]
    assert result["collective_return"].tolist() == [2.0]
    np.testing.assert_allclose([result[k][0] for k in OUTCOME_KEYS], [0.5, 0.5, 1.5, 2.0])
    # accumulators were reset for the next episode
    assert tracker.length[0] == 0 and not tracker.returns.any() and not tracker.positive_count.any()


class NaiveTracker:
    """Per-env Python lists; the measures straight from their definitions."""

    def __init__(self, num_envs):
        self.steps = [[] for _ in range(num_envs)]

    def update(self, rewards, truncated):
        finished = []
        for b in range(len(self.steps)):
            self.steps[b].append([float(r) for r in rewards[b]])
            if truncated[b]:
                finished.append((b, self.summary(self.steps[b])))
                self.steps[b] = []
        return finished

    @staticmethod
    def summary(rows):
        T, N = len(rows), len(rows[0])
        R = [sum(row[i] for row in rows) for i in range(N)]
        total = sum(R)
        spread = sum(abs(R[i] - R[j]) for i in range(N) for j in range(N))
        if spread == 0:
            eq = 1.0
        elif total <= 0:
            eq = float("nan")
        else:
            eq = 1 - spread / (2 * N * total)
        means = []
        for i in range(N):
            times = [t for t, row in enumerate(rows) if row[i] > 0]
            if times:
                means.append(sum(times) / len(times))
        sus = sum(means) / len(means) if means else float("nan")
        return {"returns": R, "length": T, "efficiency": total / T, "equality": eq,
                "sustainability": sus, "peace": (N * T - 0) / T, "collective_return": total}


def random_stream(rng, steps, B, N):
    """Rewards in {-1, 0, 1, 2} (some agents rarely rewarded) and staggered episode ends."""
    rewards = rng.choice(np.array([-1, 0, 0, 0, 1, 2], np.float32), size=(steps, B, N))
    rewards[:, :, -1] = np.where(rng.random((steps, B)) < 0.03, 1.0, 0.0)  # last agent: rarely rewarded
    rewards[:, 0, :] = np.where(rewards[:, 0, :] > 0, 0.0, rewards[:, 0, :])  # env 0: never rewarded
    truncated = np.zeros((steps, B), bool)
    for b in range(B):  # each env its own episode lengths (1..9), so ends are staggered
        t = -1
        while True:
            t += int(rng.integers(1, 10))
            if t >= steps:
                break
            truncated[t, b] = True
    truncated[17, :] = True  # and once all at the same step
    return rewards, truncated


def compare(result, expected):
    assert result["env_index"].tolist() == [b for b, _ in expected]
    for f, (_, e) in enumerate(expected):
        np.testing.assert_allclose(result["returns"][f], e["returns"], rtol=1e-6)
        assert result["length"][f] == e["length"]
        for key in ("efficiency", "equality", "sustainability", "peace", "collective_return"):
            np.testing.assert_allclose(result[key][f], e[key], rtol=1e-9, atol=1e-12, err_msg=key)


def test_tracker_matches_naive_loop_with_staggered_truncations():
    B, N, steps = 7, 4, 120
    rewards, truncated = random_stream(np.random.default_rng(0), steps, B, N)
    tracker, naive = EpisodeTracker(B, N), NaiveTracker(B)
    episodes, nan_sustainability = 0, 0
    for t in range(steps):
        result = tracker.update(rewards[t], truncated[t])
        expected = naive.update(rewards[t], truncated[t])
        if not expected:
            assert result is None
            continue
        episodes += len(expected)
        assert result["env_index"].dtype.kind == "i" and result["length"].dtype.kind == "i"
        assert result["returns"].dtype == np.float32 and result["returns"].shape == (len(expected), N)
        compare(result, expected)
        nan_sustainability += int(np.isnan(result["sustainability"]).sum())
    assert episodes > 3 * B
    assert nan_sustainability >= 3  # env 0 is never rewarded: its sustainability is NaN


def test_tracker_nan_cases_reported():
    tracker = EpisodeTracker(2, 2)
    # env 0: rewards [-1, 0] then truncated -> equality NaN, sustainability NaN ; env 1: all zero
    result = tracker.update(np.array([[-1, 0], [0, 0]], np.float32), np.array([True, True]))
    assert np.isnan(result["equality"][0]) and np.isnan(result["sustainability"][0])
    assert result["equality"][1] == 1.0 and np.isnan(result["sustainability"][1])
    assert result["efficiency"].tolist() == [-1.0, 0.0]


def test_tracker_state_dict_round_trip_continues_identically():
    B, N, steps = 5, 3, 80
    rewards, truncated = random_stream(np.random.default_rng(1), steps, B, N)
    first = EpisodeTracker(B, N)
    for t in range(40):
        first.update(rewards[t], truncated[t])
    state = first.state_dict()
    assert set(state) == {"returns", "length", "positive_time_sum", "positive_count"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    second = EpisodeTracker(B, N)
    second.load_state_dict({k: v.copy() for k, v in state.items()})
    state["length"][:] = 999  # the saved dict is a copy, not a view
    assert not (first.length == 999).any()
    for t in range(40, steps):
        a = first.update(rewards[t], truncated[t])
        b = second.update(rewards[t], truncated[t])
        assert (a is None) == (b is None)
        if a is not None:
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_tracker_rejects_bad_input():
    with pytest.raises(ValueError, match="num_envs"):
        EpisodeTracker(0, 2)
    tracker = EpisodeTracker(2, 3)
    with pytest.raises(ValueError, match="rewards"):
        tracker.update(np.zeros((3, 2), np.float32), np.zeros(2, bool))
    with pytest.raises(ValueError, match="truncated"):
        tracker.update(np.zeros((2, 3), np.float32), np.zeros(2, np.int32))
    state = tracker.state_dict()
    with pytest.raises(ValueError, match="keys"):
        tracker.load_state_dict({"returns": state["returns"]})
    bad = dict(state, length=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="length"):
        tracker.load_state_dict(bad)
    bad = dict(state, length=np.full(2, 3.5))
    with pytest.raises(ValueError, match="dtype"):
        tracker.load_state_dict(bad)


def test_metrics_and_rewards_do_not_import_torch():
    code = ("import sys, ssdinfluence.metrics, ssdinfluence.rewards; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- communication

LOG2 = np.log(2.0)


def test_mutual_information_hand_computed():
    assert mutual_information([0, 1, 0, 1], [0, 1, 0, 1], 2, 2) == pytest.approx(LOG2)  # Y = X
    assert mutual_information([0, 0, 1, 1], [0, 1, 0, 1], 2, 2) == pytest.approx(0.0, abs=1e-12)  # independent
    # p(0,0)=1/2, p(1,0)=1/4, p(1,1)=1/4: I = H(Y) - H(Y|X) = H(3/4, 1/4) - 1/2 log 2
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert mutual_information([0, 0, 1, 1], [0, 0, 0, 1], 2, 2) == pytest.approx(h - 0.5 * LOG2)
    assert np.isnan(mutual_information(np.zeros(0, int), np.zeros(0, int), 2, 2))
    with pytest.raises(ValueError, match=r"y must lie in \[0, 2\)"):
        mutual_information([0, 1], [0, 2], 2, 2)


def test_speaker_consistency_hand_computed():
    # Agent 0: deterministic speaker whose message names its action -> 1.
    # Agent 1: m = [0, 0, 1, 1], a = [0, 1, 2, 2], V = 2, A = 4: H(A|M) = 1/2 log 2, so the first
    #   term is 1 - (1/2 log 2) / log 4 = 3/4; H(M|A) = 0, so the second is 1 -> 0.875.
    # Agent 2: one constant message, actions uniform over 4: H(A|M) = log 4 -> 0; H(M|A) = 0 -> 1.
    messages = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    actions = np.array([[0, 0, 0], [1, 1, 1], [0, 2, 2], [1, 2, 3]])
    out = speaker_consistency(messages, actions, vocabulary=2, num_actions=4)
    np.testing.assert_allclose(out, [1.0, 0.875, 0.5])
    assert np.isnan(speaker_consistency(np.zeros((0, 2), int), np.zeros((0, 2), int), 2, 4)).all()
    with pytest.raises(ValueError, match="shape"):
        speaker_consistency(messages[:, :2], actions, 2, 4)
    with pytest.raises(ValueError, match="integer"):
        speaker_consistency(messages.astype(float), actions, 2, 4)


def test_instantaneous_coordination_follows_the_speaker_and_respects_episodes():
    rng = np.random.default_rng(0)
    T = 400
    messages = rng.integers(0, 2, (T, 3))
    actions = rng.integers(0, 4, (T, 3))
    actions[1:, 1] = messages[:-1, 0]  # agent 1's next action copies agent 0's message
    out = instantaneous_coordination(messages, actions, 2, 4)
    p = messages[:-1, 0].mean()
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert out[0, 1] == pytest.approx(entropy)  # I(m^0_t; a^1_{t+1}) = H(m^0)
    assert np.isnan(np.diag(out)).all()
    others = out[~np.eye(3, dtype=bool)]
    assert np.sort(others)[-2] < 0.05  # every other pair is independent (small plug-in bias)
    # Two episodes of 200 steps: the pair (199, 200) crosses the boundary and must not count.
    broken = actions.copy()
    broken[200, 1] = 1 - messages[199, 0]  # the one step pair across the boundary does not copy
    assert instantaneous_coordination(messages, broken, 2, 4)[0, 1] < entropy - 1e-6
    split = instantaneous_coordination(messages, broken, 2, 4, episode_length=[200, 200])
    p = np.concatenate([messages[:199, 0], messages[200:-1, 0]]).mean()
    assert split[0, 1] == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)))
    with pytest.raises(ValueError, match="sum to T"):
        instantaneous_coordination(messages, actions, 2, 4, episode_length=[100])


def test_instantaneous_coordination_at_moments_uses_only_those_steps():
    # At k's moments agent 1 copies agent 0's action; elsewhere it does the opposite.
    source = np.array([[0, 0], [1, 0], [0, 0], [1, 0], [0, 0], [1, 0], [0, 0]])
    actions = source.copy()
    moments = np.zeros((7, 2), bool)
    moments[[0, 1, 2], 0] = True
    for t in range(6):
        actions[t + 1, 1] = source[t, 0] if moments[t, 0] else 1 - source[t, 0]
    out = instantaneous_coordination(source, actions, 2, 2, moments=moments)
    # at moments t = 0, 1, 2 the pairs are (0,0), (1,1), (0,0): I = H(1/3, 2/3)
    assert out[0, 1] == pytest.approx(-(np.log(1 / 3) / 3 + 2 / 3 * np.log(2 / 3)))
    assert np.isnan(out[1, 0])  # agent 1 has no moments


def test_influence_statistics_hand_computed():
    influence = np.array([[1.0, 0.0], [3.0, 0.0], [2.0, 0.0]])
    pairs = np.zeros((3, 2, 2))
    pairs[:, 0, 1] = influence[:, 0]
    out = influence_statistics(influence, pairs)
    np.testing.assert_allclose(out["mean"], [2.0, 0.0])
    np.testing.assert_allclose(out["moment_share"], [1 / 3, 0.0])  # only step 1 is above the mean
    np.testing.assert_array_equal(out["moments"][:, 0], [False, True, False])
    np.testing.assert_allclose(out["pairs"], [[0.0, 2.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="influence_pairs"):
        influence_statistics(influence, pairs[:2])
