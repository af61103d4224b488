"""Reward transforms: identity, collective, prosocial, inequity aversion (Hughes et al. 2018)."""

from __future__ import annotations

import numpy as np
import pytest

from ssdinfluence.rewards import (
    REWARD_TRANSFORMS,
    Collective,
    Identity,
    InequityAversion,
    Prosocial,
    make_reward_transform,
)


def starts(*flags):
    return np.array(flags, bool)


def test_registry_names_and_classes():
    assert REWARD_TRANSFORMS == ("none", "collective", "prosocial", "inequity")
    classes = (Identity, Collective, Prosocial, InequityAversion)
    for name, cls in zip(REWARD_TRANSFORMS, classes, strict=True):
        transform = make_reward_transform(name, num_envs=2, num_agents=3)
        assert type(transform) is cls and transform.name == name


def test_identity_returns_a_float32_copy():
    rewards = np.array([[1, -2, 0]], np.float32)
    out = Identity(1, 3)(rewards, starts(True))
    assert out.dtype == np.float32 and out.shape == (1, 3) and out is not rewards
    np.testing.assert_array_equal(out, rewards)
    out[0, 0] = 99
    assert rewards[0, 0] == 1  # no aliasing
    assert Identity(1, 3).state_dict() == {}


def test_collective_sums_over_agents():
    rewards = np.array([[1, 2, 3], [0, -1, 0]], np.float32)
    out = Collective(2, 3)(rewards, starts(True, True))
    # env 0: 1 + 2 + 3 = 6 ; env 1: 0 - 1 + 0 = -1
    assert out.dtype == np.float32 and out.flags.writeable
    np.testing.assert_array_equal(out, [[6, 6, 6], [-1, -1, -1]])


def test_prosocial_hand_computed():
    rewards = np.array([[1, 2, 3]], np.float32)
    out = Prosocial(1, 3, eta=0.5)(rewards, starts(True))
    # agent 0: 1 + 0.5*(2+3) = 3.5 ; agent 1: 2 + 0.5*(1+3) = 4 ; agent 2: 3 + 0.5*(1+2) = 4.5
    np.testing.assert_array_equal(out, [[3.5, 4.0, 4.5]])
    # default eta = 0.85: [1, 0] -> [1 + 0.85*0, 0 + 0.85*1] = [1, 0.85]
    transform = make_reward_transform("prosocial", 1, 2)
    assert transform.eta == 0.85
    np.testing.assert_allclose(transform(np.array([[1, 0]], np.float32), starts(True)), [[1.0, 0.85]], rtol=1e-7)
    # eta = 0 is selfish, eta = 1 collective
    rng = np.random.default_rng(0)
    rewards = rng.integers(-2, 3, (4, 5)).astype(np.float32)
    np.testing.assert_array_equal(Prosocial(4, 5, eta=0)(rewards, np.ones(4, bool)), rewards)
    np.testing.assert_array_equal(Prosocial(4, 5, eta=1)(rewards, np.ones(4, bool)),
                                  Collective(4, 5)(rewards, np.ones(4, bool)))


def test_inequity_aversion_three_steps_with_smoothing_and_reset():
    # alpha = 1, beta = 0.5, gamma*lambda = 0.5*1 = 0.5, N = 3 -> alpha/(N-1) = 0.5, beta/(N-1) = 0.25.
    # Two envs see the same rewards; env 0 starts a new episode at t = 2, env 1 does not.
    transform = InequityAversion(2, 3, alpha=1.0, beta=0.5, gamma=0.5, lam=1.0)
    r = [np.array([1, 0, 0], np.float32), np.array([0, 2, 0], np.float32), np.array([0, 0, 1], np.float32)]

    # t = 0 (both start): e = [1, 0, 0]
    #   agent 0: envy 0, guilt (1-0)+(1-0) = 2      -> 1 - 0.25*2 = 0.5
    #   agent 1: envy (1-0) = 1, guilt 0            -> 0 - 0.5*1  = -0.5 ; agent 2 the same
    out = transform(np.stack([r[0], r[0]]), starts(True, True))
    np.testing.assert_array_equal(out, [[0.5, -0.5, -0.5]] * 2)
    np.testing.assert_array_equal(transform.smoothed, [[1, 0, 0]] * 2)

    # t = 1: e = 0.5*[1, 0, 0] + [0, 2, 0] = [0.5, 2, 0]
    #   agent 0 (0.5): envy 2-0.5 = 1.5, guilt 0.5-0 = 0.5 -> 0 - 0.75 - 0.125 = -0.875
    #   agent 1 (2):   envy 0, guilt 1.5 + 2 = 3.5         -> 2 - 0.875        = 1.125
    #   agent 2 (0):   envy 0.5 + 2 = 2.5, guilt 0         -> 0 - 1.25         = -1.25
    out = transform(np.stack([r[1], r[1]]), starts(False, False))
    np.testing.assert_array_equal(out, [[-0.875, 1.125, -1.25]] * 2)

    # t = 2: env 0 resets -> e = [0, 0, 1]
    #   agents 0, 1: envy 1 -> -0.5 ; agent 2: guilt 2 -> 1 - 0.5 = 0.5
    # env 1 carries on -> e = 0.5*[0.5, 2, 0] + [0, 0, 1] = [0.25, 1, 1]
    #   agent 0 (0.25): envy 0.75 + 0.75 = 1.5 -> 0 - 0.75 = -0.75
    #   agent 1 (1):    guilt 0.75             -> 0 - 0.1875 = -0.1875
    #   agent 2 (1):    guilt 0.75             -> 1 - 0.1875 = 0.8125
    out = transform(np.stack([r[2], r[2]]), starts(True, False))
    np.testing.assert_array_equal(out, [[-0.5, -0.5, 0.5], [-0.75, -0.1875, 0.8125]])
    np.testing.assert_array_equal(transform.smoothed, [[0, 0, 1], [0.25, 1, 1]])
    assert out.dtype == np.float32 and transform.smoothed.dtype == np.float64


def test_inequity_aversion_defaults_both_terms_are_penalties():
    transform = make_reward_transform("inequity", 1, 2)
    assert (transform.alpha, transform.beta, transform.gamma, transform.lam) == (5.0, 0.05, 0.99, 0.975)
    # t = 0: e = [1, 0] ; N - 1 = 1
    #   agent 0 (ahead):  1 - 0.05*1 = 0.95   (advantageous inequity is a penalty too)
    #   agent 1 (behind): 0 - 5*1    = -5
    out = transform(np.array([[1, 0]], np.float32), starts(True))
    np.testing.assert_allclose(out, [[0.95, -5.0]], rtol=1e-7)
    # t = 1, no reward: e = 0.99*0.975*[1, 0] = [0.96525, 0]
    #   agent 0: -0.05*0.96525 = -0.0482625 ; agent 1: -5*0.96525 = -4.82625
    out = transform(np.array([[0, 0]], np.float32), starts(False))
    np.testing.assert_allclose(out, [[-0.0482625, -4.82625]], rtol=1e-6)


def test_inequity_aversion_matches_naive_loop():
    rng = np.random.default_rng(3)
    B, N, steps = 3, 4, 30
    alpha, beta, gamma, lam = 2.0, 0.3, 0.9, 0.95
    transform = InequityAversion(B, N, alpha=alpha, beta=beta, gamma=gamma, lam=lam)
    e = np.zeros((B, N))
    for t in range(steps):
        rewards = rng.choice(np.array([-1, 0, 0, 1, 2], np.float32), size=(B, N))
        episode_start = rng.random(B) < 0.2 if t else np.ones(B, bool)
        out = transform(rewards, episode_start)
        expected = np.zeros((B, N))
        for b in range(B):
            if episode_start[b]:
                e[b] = 0
            e[b] = gamma * lam * e[b] + rewards[b]
            for i in range(N):
                envy = sum(max(e[b, j] - e[b, i], 0) for j in range(N))
                guilt = sum(max(e[b, i] - e[b, j], 0) for j in range(N))
                expected[b, i] = rewards[b, i] - alpha / (N - 1) * envy - beta / (N - 1) * guilt
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", REWARD_TRANSFORMS)
def test_single_agent_is_unchanged(name):
    transform = make_reward_transform(name, num_envs=2, num_agents=1)
    for flags in ((True, True), (False, False), (False, True)):
        rewards = np.array([[3], [-1]], np.float32)
        out = transform(rewards, starts(*flags))
        assert out.shape == (2, 1) and out.dtype == np.float32
        np.testing.assert_array_equal(out, rewards)


@pytest.mark.parametrize("name", REWARD_TRANSFORMS)
def test_state_dict_round_trip_continues_identically(name):
    rng = np.random.default_rng(5)
    B, N = 4, 3
    rewards = rng.choice(np.array([-1, 0, 1, 2], np.float32), size=(20, B, N))
    episode_start = rng.random((20, B)) < 0.15
    episode_start[0] = True
    first = make_reward_transform(name, B, N)
    for t in range(10):
        first(rewards[t], episode_start[t])
    state = first.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    second = make_reward_transform(name, B, N)
    second.load_state_dict(state)
    for value in state.values():
        value[...] = 123.0  # a copy, not a view
    for t in range(10, 20):
        np.testing.assert_array_equal(first(rewards[t], episode_start[t]), second(rewards[t], episode_start[t]))


def test_unknown_name_and_bad_parameters():
    with pytest.raises(ValueError, match=r"'selfish'.*none, collective, prosocial, inequity"):
        make_reward_transform("selfish", 2, 3)
    bad = [
        ("prosocial", {"eta": 1.5}, "eta"),
        ("prosocial", {"eta": -0.1}, "eta"),
        ("prosocial", {"eta": float("nan")}, "eta"),
        ("prosocial", {"eta": "0.5"}, "eta"),
        ("prosocial", {"alpha": 1.0}, "alpha"),
        ("none", {"eta": 0.5}, "eta"),
        ("collective", {"eta": 0.5}, "eta"),
        ("inequity", {"alpha": -1.0}, "alpha"),
        ("inequity", {"beta": float("inf")}, "beta"),
        ("inequity", {"gamma": 1.01}, "gamma"),
        ("inequity", {"lam": -0.5}, "lam"),
        ("inequity", {"eta": 0.5}, "eta"),
        ("inequity", {"lam": 0.9, "lambda": 0.9}, "lambda"),
    ]
    for name, params, word in bad:
        with pytest.raises(ValueError, match=word):
            make_reward_transform(name, 2, 3, **params)
    assert make_reward_transform("inequity", 2, 3, **{"lambda": 0.9}).lam == 0.9
    with pytest.raises(ValueError, match="num_envs"):
        make_reward_transform("none", 0, 3)
    with pytest.raises(ValueError, match="num_agents"):
        make_reward_transform("none", 2, 2.0)


def test_bad_call_arguments():
    transform = make_reward_transform("inequity", 2, 3)
    with pytest.raises(ValueError, match="rewards"):
        transform(np.zeros((3, 2), np.float32), starts(True, True))
    with pytest.raises(ValueError, match="episode_start"):
        transform(np.zeros((2, 3), np.float32), np.ones(2, np.int64))
    with pytest.raises(ValueError, match="episode_start"):
        transform(np.zeros((2, 3), np.float32), starts(True))
    assert not transform.smoothed.any()  # a rejected call leaves the state alone
    with pytest.raises(ValueError, match="keys"):
        transform.load_state_dict({})
    with pytest.raises(ValueError, match="shape"):
        transform.load_state_dict({"smoothed": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="keys"):
        Identity(2, 3).load_state_dict({"smoothed": np.zeros((2, 3))})
