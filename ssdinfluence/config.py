"""Training configuration: one dataclass, the paper's presets, TOML loading and validation.

Precedence when the CLI resolves a run: dataclass defaults < ``--preset`` < ``--config`` file
< flags given on the command line. The resolved configuration is saved as ``config.json`` in
the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .names import DIVERGENCES, ENV_NAMES, INFLUENCE_SCHEDULES, MODELS, REWARD_TRANSFORMS
from .rundir import atomic_write
from .threads import host_memory

ALGOS = ("ppo", "a2c")
DEVICES = ("auto", "cpu", "cuda")
# What may change when a run is resumed (anything else would change the training itself).
RESUMABLE = frozenset({"steps", "device", "threads"})


@dataclass
class Config:
    """Everything a training run needs. Defaults are tuned for throughput on a small machine.

    Experiment
        env, agents, model (``baseline``: the paper's A3C/PPO baseline; ``visible``: the LSTM also
        sees the one-hot previous actions of the other agents), algo (``ppo`` or ``a2c``),
        steps (total env steps, summed over envs), num_envs, seed, device, out (run directory).
    Rollout
        rollout_length: steps per env between updates; bptt_length: truncated-BPTT chunk length
        (the LSTM state is stored at chunk starts and reset at episode starts); double_buffer:
        step the batch in two halves, the env stepping one on the CPU while the GPU evaluates
        the policy on the other (for large batches on CUDA; even num_envs).
    Optimisation (Adam)
        lr annealed linearly to lr_end over lr_anneal_steps env steps (0: over the whole run),
        gamma, gae_lambda, entropy_coef, value_coef, max_grad_norm (each agent's gradient is
        clipped to this global norm), normalise_advantages, value_huber_delta (> 0: Huber's
        value loss, linear for errors beyond it; 0: squared error).
    PPO
        ppo_epochs, ppo_minibatches (split over env sequences), ppo_clip, target_kl (> 0: an
        update stops its remaining minibatches once one's approx_kl exceeds 1.5 x target_kl;
        0: never).
    Reward transform (any model)
        reward_transform: none | collective | prosocial | inequity, prosocial_eta,
        inequity_alpha, inequity_beta, inequity_lambda.
    Logging
        log_trajectories: comma-separated env indices whose episodes go to trajectories.h5
        ("" for none); log_every: log every k-th episode of those envs; log_observations:
        also store the 15x15 views (large); checkpoint_every: updates between checkpoints.
    Env
        env_kwargs: keyword arguments for ``ssdinfluence.make`` (``horizon``, ``map``, rule
        parameters); threads: Numba and torch threads (0: all cores; on <= 2 cores torch one thread in the rollout).
    Influence (model ``influence``)
        influencers: agents 0..m-1 act first and are rewarded for their influence;
        influencee_reward: influencees also get the influence they felt; divergence: kl | jsd |
        pmi; each agent trains on extrinsic_weight * e + beta * c with c clipped to
        influence_clip (0: no clip) and beta = influence_weight ramped up linearly over
        influence_ramp_steps env steps (influence_schedule ``reference``: times the reference's
        piecewise multipliers).
    Model of other agents (``moa``, ``moa-baseline`` = the same with beta 0)
        moa_loss_weight: weight of the MOA's cross-entropy; moa_visible_only: train it only on
        the agents in view (the paper's best influence models; its MOA baseline trains always).
    Communication (``comm``, ``comm-baseline`` = the same with beta 0)
        vocabulary: number of discrete messages; comm_entropy_coef, comm_loss_weight: the
        message head's entropy bonus and loss weight. Messages enter the LSTM as one-hots (the
        paper's message embedding is a linear map before a linear gate layer: no extra power).
    """

    env: str = "cleanup"
    agents: int = 5
    model: str = "baseline"
    algo: str = "ppo"
    steps: int = 5_000_000
    # 128 envs x 32 steps: the same 4,096 env steps and minibatches per update as 32 x 128, with
    # the rollout's per-step cost spread over 4x the envs (bench/learn.py: it learns no worse;
    # docs/performance.md, "Learning checks")
    num_envs: int = 128
    seed: int = 0
    device: str = "auto"
    out: str = ""
    rollout_length: int = 32
    bptt_length: int = 32
    double_buffer: bool = False
    lr: float = 0.00126
    lr_end: float = 0.000012
    lr_anneal_steps: int = 0
    gamma: float = 0.99
    gae_lambda: float = 0.95
    entropy_coef: float = 0.00176
    value_coef: float = 0.5
    max_grad_norm: float = 40.0
    normalise_advantages: bool = True
    value_huber_delta: float = 0.0
    ppo_epochs: int = 1
    ppo_minibatches: int = 4
    ppo_clip: float = 0.2
    target_kl: float = 0.0
    reward_transform: str = "none"
    prosocial_eta: float = 0.85
    inequity_alpha: float = 5.0
    inequity_beta: float = 0.05
    inequity_lambda: float = 0.975
    log_trajectories: str = "0"
    log_every: int = 10
    log_observations: bool = False
    checkpoint_every: int = 50
    threads: int = 0
    env_kwargs: dict = field(default_factory=dict)
    influencers: int = 1
    influencee_reward: bool = False
    divergence: str = "kl"
    influence_weight: float = 0.146
    extrinsic_weight: float = 1.0
    influence_clip: float = 10.0
    influence_ramp_steps: int = 0
    influence_schedule: str = "linear"
    moa_loss_weight: float = 1.0
    moa_visible_only: bool = True
    vocabulary: int = 9
    comm_entropy_coef: float = 0.000789
    comm_loss_weight: float = 0.0758

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.rollout_length

    @property
    def logged_envs(self) -> list[int]:
        return [int(i) for i in self.log_trajectories.split(",") if i.strip()] if self.log_trajectories else []

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Write ``config.json`` atomically (a kill leaves the old file or the new one)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


# The paper's best hyperparameters, for the models this package has: the table of the best
# hyperparameters per model and env in the supplementary material of Jaques et al. (2019),
# "Social Influence as Intrinsic Motivation for Multi-Agent Deep RL", arXiv:1810.08647 (v4).
# lr anneals from lr to lr_end.
PAPER_PRESETS = {
    ("cleanup", "baseline"): {"entropy_coef": 0.00176, "lr": 0.00126, "lr_end": 0.000012},
    ("harvest", "baseline"): {"entropy_coef": 0.000687, "lr": 0.00136, "lr_end": 0.000028},
    ("cleanup", "visible"): {"entropy_coef": 0.00176, "lr": 0.00126, "lr_end": 0.000012},
    ("harvest", "visible"): {"entropy_coef": 0.00184, "lr": 0.00215, "lr_end": 0.000013},
    # C = 140 in the paper's table; its unit is not stated, most likely millions of steps.
    ("cleanup", "influence"): {"entropy_coef": 0.000248, "lr": 0.00107, "lr_end": 0.000042, "influence_weight": 0.146,
                               "influence_ramp_steps": 140_000_000, "influencers": 1, "divergence": "jsd",
                               "influencee_reward": True},
    ("cleanup", "moa-baseline"): {"entropy_coef": 0.00176, "lr": 0.00123, "lr_end": 0.000012,
                                  "moa_loss_weight": 1.312, "moa_visible_only": False},
    ("harvest", "moa-baseline"): {"entropy_coef": 0.00495, "lr": 0.00206, "lr_end": 0.000022,
                                  "moa_loss_weight": 1.711, "moa_visible_only": False},
    ("cleanup", "moa"): {"entropy_coef": 0.00176, "lr": 0.00123, "lr_end": 0.000012, "influence_weight": 0.620,
                         "influence_ramp_steps": 40_000_000, "moa_loss_weight": 15.007, "moa_visible_only": True,
                         "divergence": "kl"},
    ("harvest", "moa"): {"entropy_coef": 0.00223, "lr": 0.00120, "lr_end": 0.000044, "influence_weight": 2.521,
                         "influence_ramp_steps": 226_000_000, "moa_loss_weight": 10.911, "moa_visible_only": True,
                         "divergence": "kl"},
    ("cleanup", "comm-baseline"): {"entropy_coef": 0.000249, "lr": 0.00223, "lr_end": 0.000022, "vocabulary": 9,
                                   "comm_entropy_coef": 0.000789, "comm_loss_weight": 0.0758},
    ("harvest", "comm-baseline"): {"entropy_coef": 0.000174, "lr": 0.00137, "lr_end": 0.0000127, "vocabulary": 7,
                                   "comm_entropy_coef": 0.00208, "comm_loss_weight": 0.0709},
    ("cleanup", "comm"): {"entropy_coef": 0.00305, "lr": 0.00249, "lr_end": 0.0000127, "influence_weight": 2.752,
                          "influence_ramp_steps": 1_000_000, "extrinsic_weight": 0.0, "vocabulary": 9,
                          "comm_entropy_coef": 0.000789, "comm_loss_weight": 0.0758, "divergence": "kl"},
    ("harvest", "comm"): {"entropy_coef": 0.00220, "lr": 0.000413, "lr_end": 0.000049, "influence_weight": 4.825,
                          "influence_ramp_steps": 8_000_000, "extrinsic_weight": 1.0, "vocabulary": 7,
                          "comm_entropy_coef": 0.00208, "comm_loss_weight": 0.0709, "divergence": "kl"},
    ("harvest", "influence"): {"entropy_coef": 0.00025, "lr": 0.00107, "lr_end": 0.000042, "influence_weight": 0.224,
                               "influence_ramp_steps": 140_000_000, "influencers": 3, "divergence": "pmi",
                               "influencee_reward": False},
}
PRESETS = ("paper",)
FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def preset_values(name: str, env: str, model: str) -> dict:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return dict(PAPER_PRESETS[env, model], gamma=0.99)


def load_toml(path: str | Path) -> dict:
    """Read a TOML file of Config fields (``[env_kwargs]`` as a table); ValueError if unusable."""
    import tomllib

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f"cannot read config file {path}: {error.strerror or error}") from error
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {path} is not valid TOML: {error}") from error
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"config file {path} has unknown keys {unknown}; known: {sorted(FIELDS)}")
    if not isinstance(values.get("env_kwargs", {}), dict):
        raise ValueError(f"config file {path}: env_kwargs must be a table ([env_kwargs]), "
                         f"got {values['env_kwargs']!r}")
    return values


def build_config(values: dict) -> Config:
    """A validated Config from a dict of field values; ValueError naming the first bad field."""
    config = Config()
    for key, value in values.items():
        if key not in FIELDS:
            raise ValueError(f"unknown option {key!r}")
        default = getattr(config, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be an integer, got {value!r}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {value!r}")
            value = float(value)
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        elif isinstance(default, dict) and not isinstance(value, dict):
            raise ValueError(f"{key} must be a table, got {value!r}")
        setattr(config, key, value)
    validate(config)
    return config


COEFFICIENT_LIMIT = 1e4  # loss weights: the paper's largest is 15
SEED_LIMIT = 2**63  # seeds are 0 .. 2**63 - 1 (TOML's and JSON's safe integers; torch takes seed + 1)
# Bytes per agent-step the rollout buffers hold ([T, B, N]: the uint8 views, actions, previous
# actions, log-probabilities, values, rewards, visibility), times 2 for the update's sequence copy.
_VIEW_BYTES = 15 * 15 * 3


def rollout_bytes(c: Config) -> int:
    """Memory the rollout and its update need (a lower bound: the model's activations come on
    top), from the batch shape alone."""
    T, B, N = c.rollout_length, c.num_envs, c.agents
    per_agent_step = _VIEW_BYTES + 8 + 8 + 4 * 3 + N
    return 2 * T * B * N * per_agent_step + 2 * B * N * _VIEW_BYTES  # plus the env's own views


def check_memory(c: Config, available: int, what: str) -> None:
    """ValueError unless the rollout of ``c`` fits in 80% of ``available`` bytes of ``what``."""
    needed = rollout_bytes(c)
    if needed >= 0.8 * available:
        raise ValueError(f"num_envs x rollout_length x agents = {c.num_envs} x {c.rollout_length} x {c.agents} "
                         f"needs at least {needed / 2**30:.1f} GiB for the rollout, more than this machine's "
                         f"{available / 2**30:.1f} GiB of {what}: lower num_envs or rollout_length")


def validate(c: Config) -> None:
    def need(ok, message):
        if not ok:
            raise ValueError(message)

    for f in dataclasses.fields(c):  # every float finite (nan and inf pass comparisons like >= 0)
        value = getattr(c, f.name)
        if isinstance(value, float):
            need(math.isfinite(value), f"{f.name} must be a finite number, got {value}")

    need(c.env in ENV_NAMES, f"unknown env {c.env!r}; available: {', '.join(ENV_NAMES)}")
    need(c.model in MODELS, f"unknown model {c.model!r}; available: {', '.join(MODELS)}")
    need(c.algo in ALGOS, f"unknown algo {c.algo!r}; available: {', '.join(ALGOS)}")
    need(c.device in DEVICES, f"unknown device {c.device!r}; use one of {', '.join(DEVICES)}")
    for name in ("agents", "steps", "num_envs", "rollout_length", "bptt_length", "ppo_epochs",
                 "ppo_minibatches", "log_every", "checkpoint_every"):
        need(getattr(c, name) >= 1, f"{name} must be >= 1, got {getattr(c, name)}")
    need(c.rollout_length % c.bptt_length == 0,
         f"rollout_length ({c.rollout_length}) must be a multiple of bptt_length ({c.bptt_length})")
    need(not c.double_buffer or c.num_envs % 2 == 0,
         f"double_buffer steps the batch in two halves: num_envs must be even, got {c.num_envs}")
    sequences = c.num_envs * (c.rollout_length // c.bptt_length)
    fits = max(m for m in range(1, min(c.ppo_minibatches, sequences) + 1) if sequences % m == 0)
    need(c.algo != "ppo" or sequences % c.ppo_minibatches == 0,
         f"ppo_minibatches ({c.ppo_minibatches}) must divide the {sequences} BPTT sequences per update "
         f"(num_envs x rollout_length / bptt_length): set ppo_minibatches to {fits} (--ppo-minibatches {fits}), "
         f"or more envs")
    need(0 <= c.seed < SEED_LIMIT, f"seed must be in 0..2**63 - 1, got {c.seed}")
    need(0 < c.lr <= 1 and 0 <= c.lr_end <= 1, f"lr must be in (0, 1] and lr_end in [0, 1], got {c.lr} and {c.lr_end}")
    for name in ("entropy_coef", "value_coef", "comm_entropy_coef", "comm_loss_weight", "moa_loss_weight",
                 "influence_weight", "extrinsic_weight"):  # beyond this, a loss overflows float32 at once
        need(getattr(c, name) <= COEFFICIENT_LIMIT, f"{name} must be <= {COEFFICIENT_LIMIT:g}, got {getattr(c, name)}")
    for name in ("entropy_coef", "value_coef", "value_huber_delta", "target_kl", "comm_entropy_coef",
                 "comm_loss_weight", "moa_loss_weight", "prosocial_eta", "inequity_alpha", "inequity_beta", "inequity_lambda"):
        need(getattr(c, name) >= 0, f"{name} must be >= 0, got {getattr(c, name)}")
    need(c.max_grad_norm > 0 and c.ppo_clip > 0,
         f"max_grad_norm and ppo_clip must be > 0, got {c.max_grad_norm} and {c.ppo_clip}")
    for name in ("lr_anneal_steps", "influence_ramp_steps"):
        need(getattr(c, name) >= 0, f"{name} must be >= 0, got {getattr(c, name)}")
    need(0 <= c.gamma <= 1 and 0 <= c.gae_lambda <= 1, "gamma and gae_lambda must be in [0, 1]")
    need(c.threads >= 0, f"threads must be >= 0, got {c.threads}")
    need(c.divergence in DIVERGENCES, f"unknown divergence {c.divergence!r}; choose from {', '.join(DIVERGENCES)}")
    need(c.influence_schedule in INFLUENCE_SCHEDULES,
         f"unknown influence_schedule {c.influence_schedule!r}; choose from {', '.join(INFLUENCE_SCHEDULES)}")
    need(c.model != "influence" or 1 <= c.influencers < c.agents,
         f"influencers must be between 1 and agents - 1 ({c.agents - 1}), got {c.influencers}")
    need(not (c.model in ("moa", "moa-baseline") and c.divergence == "pmi"),
         "the MOA models need divergence kl or jsd (pmi needs the influencee's next action)")
    need(c.vocabulary >= 2, f"vocabulary must be >= 2, got {c.vocabulary}")
    need(c.influence_weight >= 0 and c.extrinsic_weight >= 0 and c.influence_clip >= 0,
         "influence_weight, extrinsic_weight and influence_clip must be >= 0")
    need(c.reward_transform in REWARD_TRANSFORMS,
         f"unknown reward_transform {c.reward_transform!r}; available: {', '.join(REWARD_TRANSFORMS)}")
    from .envs import make  # here, not at the top: the command line reads Config without loading the kernels

    make(c.env, num_envs=1, num_agents=c.agents, **c.env_kwargs)  # agents vs map, env_kwargs: ValueError
    # The host's memory only: CUDA and the GPU's memory are checked by train.training_device on
    # the machine that trains (config stays torch-free, and a sweep driver validates trials
    # that may train elsewhere).
    memory = host_memory()
    if memory is not None:
        check_memory(c, memory, "memory")
    try:
        logged = c.logged_envs
    except ValueError:
        logged = [-1]
    need(all(0 <= i < c.num_envs for i in logged),
         f"log_trajectories must list env indices in 0..{c.num_envs - 1}, got {c.log_trajectories!r}")
    need(len(set(logged)) == len(logged), f"log_trajectories lists an env twice: {c.log_trajectories!r}")
