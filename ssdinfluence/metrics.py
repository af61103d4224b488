"""Social outcome measures of Perolat et al. (2017), and a batched per-episode tracker.

Pure numpy (no torch). With ``R^i`` agent i's episode return, ``T`` the episode length and
``N`` the number of agents:

* efficiency     ``U = sum_i R^i / T``
* equality       ``E = 1 - sum_i sum_j |R^i - R^j| / (2 N sum_i R^i)``
* sustainability ``S = mean_i (mean time step at which agent i got a positive reward)``
* peace          ``P = (N T - sum_i sum_t [agent i tagged out at t]) / T``

Every measure is vectorised over leading dimensions (``[..., N]`` in, ``[...]`` out) and
returns ``float64``. Edge cases (each is tested):

* ``equality``: if all N returns are exactly equal the result is ``1.0`` (whatever their sign,
  zero included, and always for N = 1). Otherwise, if ``sum_i R^i <= 0`` the result is ``NaN``:
  the measure (one minus a Gini coefficient) assumes non-negative returns and has no meaning
  for a zero or negative total. With a positive total but some negative returns (possible in
  Cleanup and Harvest through fire costs and hit penalties) the formula is applied as is and
  the result may fall below 0; it is not clipped.
* ``sustainability``: time steps are 0-based indices within the episode (the first step is
  t = 0). An agent never rewarded (count 0) is left out of the mean over agents; if no agent
  was rewarded the result is ``NaN``.
* ``efficiency`` and ``peace``: the episode length must be positive (``ValueError`` otherwise).
* ``peace``: nobody is ever tagged out in these envs, so ``tagged_out_steps`` defaults to 0
  and P = N.

Communication and influence measures of the paper (Sec. 6.2), computed from logged episodes
(``messages [T, N]``, ``actions [T, N]``, ``influence [T, N]``, ``influence_pairs [T, N, N]``):

* :func:`speaker_consistency`: per agent, ``1 - H(A|M) / log A`` and ``1 - H(M|A) / log V``
  averaged (1: messages and actions determine each other; 0: each is uniform given the other).
* :func:`instantaneous_coordination`: ``I(x_t^k; a_{t+1}^j)`` for every ordered pair k != j,
  where x is the speaker's message (symbol/action) or action (action/action), over all steps
  and at k's influential moments (steps where k's influence is above its mean).
* :func:`influence_statistics`: mean influence per agent and per (k, j) pair, and the share of
  influential moments.

Probabilities are plug-in estimates from counts; entropies and mutual information are in nats.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "OUTCOME_KEYS",
    "BeamTracker",
    "EpisodeTracker",
    "efficiency",
    "equality",
    "influence_statistics",
    "instantaneous_coordination",
    "mutual_information",
    "peace",
    "social_outcomes",
    "speaker_consistency",
    "sustainability",
]

OUTCOME_KEYS = ("efficiency", "equality", "sustainability", "peace")


def _returns_array(returns) -> np.ndarray:
    returns = np.asarray(returns, dtype=np.float64)
    if returns.ndim < 1 or returns.shape[-1] < 1:
        raise ValueError(f"returns must have shape [..., N] with N >= 1, got shape {returns.shape}")
    return returns


def _episode_length(episode_length) -> np.ndarray:
    length = np.asarray(episode_length, dtype=np.float64)
    if not np.all(length > 0):
        raise ValueError(f"episode_length must be positive, got {episode_length!r}")
    return length


def efficiency(returns, episode_length) -> np.ndarray:
    """Efficiency ``U = sum_i R^i / T``: collective return per time step.

    Args:
        returns: ``[..., N]`` any real dtype, each agent's episode return ``R^i``.
        episode_length: ``T``, a positive scalar or an array broadcastable to ``[...]``
            (int or float).

    Returns:
        ``[...] float64`` (a 0-d array for a single episode).
    """
    returns = _returns_array(returns)
    return returns.sum(axis=-1) / _episode_length(episode_length)


def equality(returns) -> np.ndarray:
    """Equality ``E = 1 - sum_i sum_j |R^i - R^j| / (2 N sum_i R^i)`` (one minus the Gini index).

    Args:
        returns: ``[..., N]`` any real dtype, each agent's episode return.

    Returns:
        ``[...] float64``: 1.0 where all N returns are exactly equal (any sign, N = 1 included);
        else NaN where ``sum_i R^i <= 0``; else the formula, not clipped (below 0 is possible
        when some returns are negative).
    """
    returns = _returns_array(returns)
    n = returns.shape[-1]
    total = returns.sum(axis=-1)
    # Pairwise |R^i - R^j| by broadcasting ([..., N, N]; N is small): exactly 0 when all equal.
    spread = np.abs(returns[..., :, None] - returns[..., None, :]).sum(axis=(-2, -1))
    all_equal = spread == 0
    valid = ~all_equal & (total > 0)
    safe_total = np.where(valid, total, 1.0)
    value = 1.0 - spread / (2.0 * n * safe_total)
    return np.where(all_equal, 1.0, np.where(valid, value, np.nan))


def sustainability(positive_time_sum, positive_count) -> np.ndarray:
    """Sustainability ``S``: mean over agents of the mean time step of their positive rewards.

    Args:
        positive_time_sum: ``[..., N]`` int or float, per agent the sum of the 0-based time
            steps t at which it got a reward > 0.
        positive_count: ``[..., N]`` int (non-negative), per agent the number of such steps.

    Returns:
        ``[...] float64``: agents with count 0 are excluded from the mean over agents; NaN
        where no agent ever got a positive reward.
    """
    time_sum = np.asarray(positive_time_sum, dtype=np.float64)
    count = np.asarray(positive_count)
    if time_sum.shape != count.shape or time_sum.ndim < 1:
        raise ValueError(
            f"positive_time_sum {time_sum.shape} and positive_count {count.shape} must both have shape [..., N]"
        )
    if np.any(count < 0):
        raise ValueError("positive_count must be non-negative")
    rewarded = count > 0
    per_agent = np.where(rewarded, time_sum / np.where(rewarded, count, 1), 0.0)
    num_rewarded = rewarded.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = per_agent.sum(axis=-1) / num_rewarded
    return np.where(num_rewarded > 0, mean, np.nan)


def peace(num_agents, episode_length, tagged_out_steps=0) -> np.ndarray:
    """Peace ``P = (N T - sum_i sum_t [agent i tagged out at t]) / T``.

    Args:
        num_agents: ``N``, an int.
        episode_length: ``T``, a positive scalar or array ``[...]``.
        tagged_out_steps: the number of (agent, step) pairs spent tagged out in the episode,
            summed over agents: a scalar or array broadcastable to ``[...]``; 0 by default
            (nobody is ever tagged out in these envs, so P = N).

    Returns:
        ``[...] float64`` (0-d for scalar inputs).
    """
    if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)) or num_agents < 1:
        raise ValueError(f"num_agents must be a positive integer, got {num_agents!r}")
    length = _episode_length(episode_length)
    tagged = np.asarray(tagged_out_steps, dtype=np.float64)
    if np.any(tagged < 0) or np.any(tagged > num_agents * length):
        raise ValueError(f"tagged_out_steps must lie in [0, num_agents * episode_length], got {tagged_out_steps!r}")
    return (num_agents * length - tagged) / length


def social_outcomes(returns, episode_length, positive_time_sum, positive_count,
                    tagged_out_steps=0) -> dict[str, np.ndarray]:
    """All four measures at once, vectorised over leading dimensions.

    Args:
        returns: ``[..., N]`` episode returns.
        episode_length: ``T``, scalar or ``[...]``.
        positive_time_sum, positive_count: ``[..., N]`` each (see :func:`sustainability`).
        tagged_out_steps: scalar or ``[...]`` (see :func:`peace`), 0 by default.

    Returns:
        dict with keys ``efficiency``, ``equality``, ``sustainability``, ``peace``, each
        ``[...] float64`` (``peace`` broadcast to the same shape as the others).
    """
    returns = _returns_array(returns)
    lead = returns.shape[:-1]
    if np.shape(positive_time_sum) != returns.shape or np.shape(positive_count) != returns.shape:
        raise ValueError(
            f"positive_time_sum {np.shape(positive_time_sum)} and positive_count {np.shape(positive_count)} "
            f"must have the shape of returns {returns.shape}"
        )
    eff = efficiency(returns, episode_length)
    out = {
        "efficiency": eff,
        "equality": equality(returns),
        "sustainability": sustainability(positive_time_sum, positive_count),
        "peace": peace(returns.shape[-1], episode_length, tagged_out_steps),
    }
    shape = np.broadcast_shapes(lead, *(value.shape for value in out.values()))
    return {key: np.broadcast_to(value, shape).astype(np.float64, copy=True) for key, value in out.items()}


class EpisodeTracker:
    """Accumulates per-env, per-agent statistics over a batch of running episodes.

    Accumulators (preallocated once, updated in place, vectorised over the B envs):

    * ``returns``            ``[B, N] float64``: return so far of the running episode
    * ``length``             ``[B] int64``: steps taken so far in the running episode
    * ``positive_time_sum``  ``[B, N] int64``: sum of the 0-based steps t with reward > 0
    * ``positive_count``     ``[B, N] int64``: number of such steps

    Call :meth:`update` once per env step with that step's rewards and the mask of envs whose
    episode the step ended (the env autoresets them). Env episodes may end at different steps.
    """

    _STATE = (
        ("returns", np.float64),
        ("length", np.int64),
        ("positive_time_sum", np.int64),
        ("positive_count", np.int64),
    )

    def __init__(self, num_envs: int, num_agents: int):
        for name, value in (("num_envs", num_envs), ("num_agents", num_agents)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_envs = int(num_envs)
        self.num_agents = int(num_agents)
        B, N = self.num_envs, self.num_agents
        self.returns = np.zeros((B, N), np.float64)
        self.length = np.zeros(B, np.int64)
        self.positive_time_sum = np.zeros((B, N), np.int64)
        self.positive_count = np.zeros((B, N), np.int64)
        self._positive = np.zeros((B, N), np.bool_)
        self._scratch = np.zeros((B, N), np.int64)

    def reset(self, mask=None) -> None:
        """Zero the accumulators of the envs where ``mask`` ``[B] bool`` is True (all if None)."""
        index = slice(None) if mask is None else np.asarray(mask, np.bool_)
        self.returns[index] = 0.0
        self.length[index] = 0
        self.positive_time_sum[index] = 0
        self.positive_count[index] = 0

    def update(self, rewards, truncated) -> dict | None:
        """Add one step; report and reset the envs whose episode this step ended.

        Args:
            rewards: ``[B, N] float32`` (any real dtype accepted), this step's rewards.
            truncated: ``[B] bool``, True where this step ended the env's episode (pass
                ``terminated | truncated`` if an env can terminate).

        Returns:
            None if no episode ended this step, else a dict over the F finished envs:
            ``env_index [F] int64``, ``returns [F, N] float32``, ``length [F] int64``,
            ``collective_return [F] float64`` and ``efficiency``, ``equality``,
            ``sustainability``, ``peace``, each ``[F] float64`` (measures computed from the
            float64 accumulators; see the module docstring for NaN cases).
        """
        rewards = np.asarray(rewards)
        truncated = np.asarray(truncated)
        B, N = self.num_envs, self.num_agents
        if rewards.shape != (B, N):
            raise ValueError(f"rewards have shape {rewards.shape}, expected {(B, N)} (num_envs, num_agents)")
        if truncated.shape != (B,) or truncated.dtype != np.bool_:
            raise ValueError(f"truncated must be a bool array of shape {(B,)}, got {truncated.dtype} {truncated.shape}")
        self.returns += rewards
        np.greater(rewards, 0, out=self._positive)
        self.positive_count += self._positive
        np.multiply(self._positive, self.length[:, None], out=self._scratch)
        self.positive_time_sum += self._scratch
        self.length += 1
        if not truncated.any():
            return None
        index = np.flatnonzero(truncated)
        returns = self.returns[index]
        length = self.length[index]
        result = {"env_index": index.astype(np.int64), "returns": returns.astype(np.float32),
                  "length": length.copy(), "collective_return": returns.sum(axis=-1)}
        result.update(social_outcomes(returns, length, self.positive_time_sum[index], self.positive_count[index]))
        self.reset(truncated)
        return result

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the accumulators (keys ``returns``, ``length``, ``positive_time_sum``,
        ``positive_count``; shapes and dtypes as in the class docstring)."""
        return {name: getattr(self, name).copy() for name, _ in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        """Restore accumulators saved by :meth:`state_dict` (shapes must match this tracker)."""
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict of arrays, got {type(state).__name__}")
        expected = {name for name, _ in self._STATE}
        if set(state) != expected:
            raise ValueError(f"state keys {sorted(state)} do not match {sorted(expected)}")
        values = {}
        for name, dtype in self._STATE:  # validate everything before touching anything
            target = getattr(self, name)
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ValueError(f"state[{name!r}] has shape {value.shape}, expected {target.shape}")
            if not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise ValueError(f"state[{name!r}] has dtype {value.dtype}, expected {np.dtype(dtype)}")
            values[name] = value
        for name, value in values.items():
            getattr(self, name)[...] = value


class BeamTracker:
    """Per agent, how often it fired its punishment beam and how often it was hit, over a window
    of steps (the trainer's: one update's rollout); who hit whom as well; where the game has a
    cleaning beam, how often each agent fired it.

    Accumulators ``[N]`` / ``[N, N]`` int64, preallocated; :meth:`update` once per env step,
    :meth:`columns` at the end of the window (it also resets). Rates are per agent-step: the
    fraction of the window's ``B * T`` steps in which agent k chose FIRE (``fire_rate_agent_k``),
    CLEAN (``clean_rate_agent_k``, with ``clean_action``) and in which it was hit at least once
    (``hit_rate_agent_k``), and the mean number of hits per step that k landed on j
    (``hits_k_on_j``).
    """

    def __init__(self, num_agents: int, fire_action: int, clean_action: int | None = None):
        if isinstance(num_agents, bool) or not isinstance(num_agents, (int, np.integer)) or num_agents < 1:
            raise ValueError(f"num_agents must be a positive integer, got {num_agents!r}")
        self.num_agents, self.fire_action = int(num_agents), int(fire_action)
        self.clean_action = None if clean_action is None else int(clean_action)
        N = self.num_agents
        self.fired = np.zeros(N, np.int64)
        self.cleaned = np.zeros(N, np.int64)
        self.was_hit = np.zeros(N, np.int64)
        self.pairs = np.zeros((N, N), np.int64)
        self.steps = 0  # env steps (per env) counted: B per update() call

    @staticmethod
    def column_names(num_agents: int, cleans: bool = False) -> list[str]:
        N = num_agents
        return ([f"fire_rate_agent_{k}" for k in range(N)]
                + ([f"clean_rate_agent_{k}" for k in range(N)] if cleans else [])
                + [f"hit_rate_agent_{k}" for k in range(N)]
                + [f"hits_{k}_on_{j}" for k in range(N) for j in range(N) if j != k])

    def update(self, actions, hits) -> None:
        """Add one step of B envs: ``actions [B, N]`` int (those just taken), ``hits [B, N, N]``
        int (the env's ``info["hits"]``, [b, shooter, target])."""
        actions, hits = np.asarray(actions), np.asarray(hits)
        N = self.num_agents
        if actions.ndim != 2 or actions.shape[1] != N or hits.shape != (actions.shape[0], N, N):
            raise ValueError(f"actions {actions.shape} and hits {hits.shape} must be [B, {N}] and [B, {N}, {N}]")
        self.fired += (actions == self.fire_action).sum(0)
        if self.clean_action is not None:
            self.cleaned += (actions == self.clean_action).sum(0)
        self.was_hit += (hits.sum(1) > 0).sum(0)
        self.pairs += hits.sum(0)
        self.steps += actions.shape[0]

    def columns(self) -> dict[str, float]:
        """The window's rates by column name (NaN if no step was counted); then reset."""
        N, steps = self.num_agents, self.steps
        scale = 1.0 / steps if steps else float("nan")
        row = {f"fire_rate_agent_{k}": float(self.fired[k] * scale) for k in range(N)}
        if self.clean_action is not None:
            row.update({f"clean_rate_agent_{k}": float(self.cleaned[k] * scale) for k in range(N)})
        row.update({f"hit_rate_agent_{k}": float(self.was_hit[k] * scale) for k in range(N)})
        row.update({f"hits_{k}_on_{j}": float(self.pairs[k, j] * scale) for k in range(N) for j in range(N) if j != k})
        self.fired[:], self.cleaned[:], self.was_hit[:], self.pairs[:], self.steps = 0, 0, 0, 0, 0
        return row


# ---------------------------------------------------------------------------- communication


def _symbols(name: str, values, size: int) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be integer symbols, got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() >= size):
        raise ValueError(f"{name} must lie in [0, {size}), got values in [{values.min()}, {values.max()}]")
    return values.astype(np.int64)


def _joint_counts(x: np.ndarray, y: np.ndarray, nx: int, ny: int) -> np.ndarray:
    """``[nx, ny] float64`` counts of the pairs (x[i], y[i])."""
    return np.bincount(x * ny + y, minlength=nx * ny).reshape(nx, ny).astype(np.float64)


def _conditional_entropy(joint: np.ndarray) -> float:
    """``H(Y | X)`` in nats from joint counts ``[nx, ny]`` (rows: X); 0 for an empty table."""
    total = joint.sum()
    if total == 0:
        return 0.0
    row = joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / row), 0.0)
    return float(-terms.sum() / total)


def mutual_information(x, y, nx: int, ny: int) -> float:
    """Plug-in mutual information ``I(X; Y)`` in nats of paired samples.

    Args:
        x: ``[S]`` int, symbols in ``[0, nx)``.
        y: ``[S]`` int, symbols in ``[0, ny)``, paired with x.
        nx, ny: alphabet sizes.

    Returns:
        float >= 0; NaN if there are no samples.
    """
    x, y = _symbols("x", x, nx), _symbols("y", y, ny)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x {x.shape} and y {y.shape} must be 1-d arrays of the same length")
    if x.size == 0:
        return float("nan")
    joint = _joint_counts(x, y, nx, ny) / x.size
    outer = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / outer), 0.0)
    return max(float(terms.sum()), 0.0)  # exact algebra is >= 0; clamp rounding noise


def speaker_consistency(messages, actions, vocabulary: int, num_actions: int) -> np.ndarray:
    """Each agent's speaker consistency: how consistently its messages and actions go together.

    ``0.5 * [(1 - H(A^k | M^k) / log A) + (1 - H(M^k | A^k) / log V)]``, from the joint counts of
    the message ``m_t^k`` and action ``a_t^k`` agent k chose at the same step t.

    Args:
        messages: ``[T, N]`` int, messages in ``[0, vocabulary)`` (the ``messages`` log field).
        actions: ``[T, N]`` int, actions in ``[0, num_actions)``.
        vocabulary: V >= 2; num_actions: A >= 2.

    Returns:
        ``[N] float64`` in [0, 1]: 1 when each determines the other (a deterministic speaker
        whose message names its action); NaN for an agent when T = 0.
    """
    if vocabulary < 2 or num_actions < 2:
        raise ValueError(f"vocabulary ({vocabulary}) and num_actions ({num_actions}) must be at least 2")
    messages = _symbols("messages", messages, vocabulary)
    actions = _symbols("actions", actions, num_actions)
    if messages.shape != actions.shape or messages.ndim != 2:
        raise ValueError(f"messages {messages.shape} and actions {actions.shape} must both have shape [T, N]")
    out = np.full(messages.shape[1], np.nan)
    if messages.shape[0] == 0:
        return out
    for k in range(messages.shape[1]):
        joint = _joint_counts(messages[:, k], actions[:, k], vocabulary, num_actions)  # rows: M
        action_given_message = 1.0 - _conditional_entropy(joint) / np.log(num_actions)
        message_given_action = 1.0 - _conditional_entropy(joint.T) / np.log(vocabulary)
        out[k] = 0.5 * (action_given_message + message_given_action)
    return out


def instantaneous_coordination(source, actions, source_size: int, num_actions: int,
                               episode_length=None, moments=None) -> np.ndarray:
    """``I(x_t^k; a_{t+1}^j)`` for every ordered pair (k, j), k != j.

    With ``source`` the messages this is symbol/action coordination (does j's next action
    follow k's message?); with ``source = actions`` it is action/action coordination. The
    paper reports the mean over steps (the estimate over all step pairs) and the max over pairs.

    Args:
        source: ``[T, N]`` int, x_t^k in ``[0, source_size)``.
        actions: ``[T, N]`` int, a_t^j in ``[0, num_actions)``.
        source_size, num_actions: alphabet sizes.
        episode_length: ``[E]`` int lengths of the consecutive episodes the T rows hold (sum = T),
            so that no pair (t, t+1) crosses an episode boundary; None: one episode.
        moments: optional ``[T, N] bool``; only steps t where ``moments[t, k]`` (e.g. k's
            influential moments) count for speaker k.

    Returns:
        ``[N, N] float64`` in nats, [k, j] = I(x^k; a^j at the next step); NaN on the diagonal
        and where no step pair was counted.
    """
    source = _symbols("source", source, source_size)
    actions = _symbols("actions", actions, num_actions)
    if source.shape != actions.shape or source.ndim != 2:
        raise ValueError(f"source {source.shape} and actions {actions.shape} must both have shape [T, N]")
    T, N = source.shape
    lengths = np.array([T] if episode_length is None else episode_length, dtype=np.int64).reshape(-1)
    if np.any(lengths < 0) or lengths.sum() != T:
        raise ValueError(f"episode_length must be non-negative and sum to T = {T}, got sum {lengths.sum()}")
    has_next = np.ones(T, bool)  # row t pairs with row t + 1 unless t ends an episode
    has_next[np.cumsum(lengths)[lengths > 0] - 1] = False
    if moments is not None:
        moments = np.asarray(moments, bool)
        if moments.shape != (T, N):
            raise ValueError(f"moments has shape {moments.shape}, expected {(T, N)}")
    out = np.full((N, N), np.nan)
    t = np.flatnonzero(has_next)
    for k in range(N):
        rows = t if moments is None else t[moments[t, k]]
        if rows.size == 0:
            continue
        for j in range(N):
            if j != k:
                out[k, j] = mutual_information(source[rows, k], actions[rows + 1, j], source_size, num_actions)
    return out


def influence_statistics(influence, influence_pairs=None) -> dict[str, np.ndarray]:
    """Summary of logged per-step influence.

    Args:
        influence: ``[T, N]`` float, influence agent k exerted at step t (the ``influence``
            log field).
        influence_pairs: optional ``[T, N, N]`` float, [t, k, j] = k's influence on j.

    Returns:
        dict of ``mean`` ``[N]`` (mean influence per agent), ``moment_share`` ``[N]`` (share of
        steps that are k's influential moments, influence above k's mean), ``moments``
        ``[T, N] bool`` (those steps), and with pairs ``pairs`` ``[N, N]`` (mean per pair); all float64 except ``moments``; NaN means for T = 0.
    """
    influence = np.asarray(influence, np.float64)
    if influence.ndim != 2:
        raise ValueError(f"influence must have shape [T, N], got {influence.shape}")
    T, N = influence.shape
    with np.errstate(invalid="ignore"):
        mean = influence.mean(axis=0) if T else np.full(N, np.nan)
        moments = influence > mean
    out = {"mean": mean, "moment_share": moments.mean(axis=0) if T else np.full(N, np.nan), "moments": moments}
    if influence_pairs is not None:
        pairs = np.asarray(influence_pairs, np.float64)
        if pairs.shape != (T, N, N):
            raise ValueError(f"influence_pairs has shape {pairs.shape}, expected {(T, N, N)}")
        out["pairs"] = pairs.mean(axis=0) if T else np.full((N, N), np.nan)
    return out
