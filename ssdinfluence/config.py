"""Training configuration: one dataclass, the paper's presets, TOML loading, merging and validation.

Precedence when a run's values are merged (:func:`merge`, for ``ssdinfluence run`` and for each
trial of a sweep): dataclass defaults < preset < configuration file < flags. The resolved
configuration is saved as ``config.json`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .names import DIVERGENCES, ENV_NAMES, INFLUENCE_SCHEDULES, MODELS, REWARD_TRANSFORMS
from .options import option, option_of
from .rundir import atomic_write
from .threads import host_memory

ALGOS = ("ppo", "a2c")
DEVICES = ("auto", "cpu", "cuda")
# What may change when a run is resumed (anything else would change the training itself).
RESUMABLE = frozenset({"steps", "device", "threads"})


# Loss weights: the paper's largest is 15; beyond 1e4 a loss overflows float32 at once.
COEFFICIENT_LIMIT = 1e4
SEED_LIMIT = 2**63  # seeds are 0 .. 2**63 - 1 (TOML's and JSON's safe integers; torch takes seed + 1)


def _weight(default: float, help: str):
    """A loss or reward weight: >= 0, and at most COEFFICIENT_LIMIT."""
    return option(default, help, low=0, limit=COEFFICIENT_LIMIT)


@dataclass
class Config:
    """Everything a training run needs. Defaults are tuned for throughput on a small machine.

    Each field is declared once, with :func:`~ssdinfluence.options.option`: its type, default,
    help, choices and bounds. The flags of ``ssdinfluence run`` and their ``--help``, the checks
    of :func:`build_config` and the field tables of docs/training.md are derived from that
    declaration; :data:`FIELD_GROUPS` groups the fields for the tables. Build a Config with
    :func:`build_config` (validated), from values layered by :func:`merge`.
    """

    env: str = option("cleanup", choices=ENV_NAMES, help="Game the agents play.")
    agents: int = option(5, low=1, help="Agents per env, each with its own policy.")
    model: str = option("baseline", choices=MODELS, help=(
        "baseline (the paper's A3C/PPO baseline), visible (its LSTM also sees the one-hot previous actions "
        "of the other agents), influence (basic social influence), moa (influence through a model of other "
        "agents), moa-baseline (the MOA as an auxiliary task), comm (influential communication) or "
        "comm-baseline (messages trained on the env reward)."))
    algo: str = option("ppo", choices=ALGOS, help=(
        "ppo (clipped PPO epochs over minibatches) or a2c (one gradient step per rollout)."))
    steps: int = option(5_000_000, low=1, steps=True, help=(
        "Total env steps of the run, summed over all envs, e.g. 5e6."))
    # 128 envs x 32 steps: the same 4,096 env steps and minibatches per update as 32 x 128, with
    # the rollout's per-step cost spread over 4x the envs (bench/learn.py: it learns no worse;
    # docs/performance.md, "Learning checks")
    num_envs: int = option(128, low=1, help="Envs stepped together as one batch.")
    seed: int = option(0, low=0, high=SEED_LIMIT - 1, help=(
        "Seed of the envs, the initial weights and the action sampling."))
    device: str = option("auto", choices=DEVICES, help=(
        "Where the networks train: auto picks CUDA when available."))
    out: str = option("", directory=True, help=(
        "Run directory: config.json, checkpoint, metrics and episode logs (empty: "
        "runs/ENV-MODEL-ALGO-sSEED)."))
    rollout_length: int = option(32, low=1, help="Env steps per env between updates.")
    bptt_length: int = option(32, low=1, help=(
        "Truncated-BPTT chunk length in steps: the LSTM state is stored at chunk starts and reset at episode "
        "starts."))
    double_buffer: bool = option(False, help=(
        "Step the batch in two halves, the envs stepping one on the CPU while the GPU evaluates the policy "
        "on the other (large batches on CUDA; needs an even num_envs)."))
    lr: float = option(0.00126, low=0, low_open=True, high=1, help=(
        "Initial learning rate of Adam, annealed linearly to lr_end."))
    lr_end: float = option(0.000012, low=0, high=1, help=(
        "Final learning rate, reached after lr_anneal_steps env steps."))
    lr_anneal_steps: int = option(0, low=0, steps=True, help=(
        "Env steps over which lr anneals to lr_end (0: the whole run)."))
    gamma: float = option(0.99, low=0, high=1, help="Discount factor.")
    gae_lambda: float = option(0.95, low=0, high=1, help="Lambda of generalised advantage estimation.")
    entropy_coef: float = _weight(0.00176, "Weight of the policy's entropy bonus in the loss.")
    value_coef: float = _weight(0.5, "Weight of the value loss.")
    max_grad_norm: float = option(40.0, low=0, low_open=True, help=(
        "Each agent's gradient is clipped to this global norm."))
    normalise_advantages: bool = option(True, help=(
        "Normalise the advantages to zero mean and unit std, per agent and minibatch."))
    value_huber_delta: float = option(0.0, low=0, help=(
        "Huber value loss, linear for errors beyond this (0: squared error)."))
    ppo_epochs: int = option(1, low=1, help="PPO passes over each rollout.")
    ppo_minibatches: int = option(4, low=1, help=(
        "PPO minibatches per pass, split over the BPTT sequences (num_envs x rollout_length / bptt_length of "
        "them, which it must divide)."))
    ppo_clip: float = option(0.2, low=0, low_open=True, help="PPO's clipping range of the probability ratio.")
    target_kl: float = option(0.0, low=0, help=(
        "An update stops its remaining minibatches once one's approx_kl exceeds 1.5 x this (0: never)."))
    reward_transform: str = option("none", choices=REWARD_TRANSFORMS, help=(
        "Reward each agent trains on: none (its own), collective (the sum of everyone's), prosocial or "
        "inequity (inequity aversion)."))
    prosocial_eta: float = option(0.85, low=0, high=1, help=(
        "prosocial: weight of the others' rewards (0: selfish, 1: collective)."))
    inequity_alpha: float = _weight(5.0, help=(
        "inequity: weight of disadvantageous inequity (others earn more)."))
    inequity_beta: float = _weight(0.05, help=(
        "inequity: weight of advantageous inequity (the agent earns more)."))
    inequity_lambda: float = option(0.975, low=0, high=1, help=(
        "inequity: smoothing of the rewards compared (each step they decay by gamma x this)."))
    log_trajectories: str = option("0", help=(
        "Comma-separated env indices whose episodes go to trajectories.h5, e.g. 0,1 (empty: none)."))
    log_every: int = option(10, low=1, help="Log every k-th episode of those envs.")
    log_observations: bool = option(False, help=(
        "Also store the agents' 15x15 views in trajectories.h5 (large)."))
    checkpoint_every: int = option(50, low=1, help="Updates between checkpoints.")
    threads: int = option(0, low=0, help=(
        "CPU threads for the env kernels and torch (0: all cores; on 2 cores or fewer torch takes one thread "
        "in the rollout)."))
    env_kwargs: dict = option({}, help=(
        "Env parameters for ssdinfluence.make (horizon, map, rule parameters); as a flag KEY=VALUE, "
        "repeatable, e.g. horizon=100 or waste_spawn_mode=\"single\"."))
    influencers: int = option(1, low=1, help=(
        "influence: agents 0..m-1 act first and are rewarded for their influence (at most agents - 1)."))
    influencee_reward: bool = option(False, help="influence: influencees also get the influence they felt.")
    divergence: str = option("kl", choices=DIVERGENCES, help=(
        "How influence compares the influencee's action distribution given the influencer's actual action "
        "with its marginal: kl, jsd (Jensen-Shannon) or pmi (pointwise mutual information of the action "
        "taken)."))
    influence_weight: float = _weight(0.146, "beta, the influence reward's weight once ramped up.")
    extrinsic_weight: float = _weight(1.0, "alpha, the env reward's weight.")
    influence_clip: float = option(10.0, low=0, help="Clip the influence reward to [-this, this] (0: no clip).")
    influence_ramp_steps: int = option(0, low=0, steps=True, help=(
        "Env steps over which beta ramps up linearly from 0 (0: no ramp)."))
    influence_schedule: str = option("linear", choices=INFLUENCE_SCHEDULES, help=(
        "linear: the ramp alone; reference: the ramp times the reference implementation's piecewise "
        "multipliers."))
    moa_loss_weight: float = _weight(1.0, "moa: weight of the MOA's cross-entropy loss.")
    moa_visible_only: bool = option(True, help=(
        "moa: train the MOA only on the agents in view (the paper's best influence models; its MOA baseline "
        "trains on all)."))
    vocabulary: int = option(9, low=2, help="comm: number of discrete messages.")
    comm_entropy_coef: float = _weight(0.000789, "comm: entropy bonus weight of the message head.")
    comm_loss_weight: float = _weight(0.0758, "comm: loss weight of the message head.")

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
OPTIONS = {name: option_of(f) for name, f in FIELDS.items()}
# The groups of fields in docs/training.md's tables, keyed by the field each starts at (fields
# keep their dataclass order): (title, what the group's fields share beyond their own help).
FIELD_GROUPS = {
    "env": ("Experiment", ""),
    "rollout_length": ("Rollout", "An update trains on num_envs x rollout_length env steps, cut into sequences of "
                                  "bptt_length steps."),
    "lr": ("Optimisation (Adam)", ""),
    "ppo_epochs": ("PPO", ""),
    "reward_transform": ("Reward transform (any model)", "The transformed reward is what an influence model adds "
                                                         "its influence reward to."),
    "log_trajectories": ("Logging", ""),
    "threads": ("Env and threads", ""),
    "influencers": ("Influence (model ``influence``)",
                    "Each agent trains on extrinsic_weight x e + beta x c, with e the env reward, c the influence "
                    "reward clipped to influence_clip and beta = influence_weight ramped up over "
                    "influence_ramp_steps env steps (influence_schedule ``reference``: times the reference's "
                    "piecewise multipliers). The MOA and communication models use these fields too, influencers and "
                    "influencee_reward aside."),
    "moa_loss_weight": ("Model of other agents (``moa``, ``moa-baseline``)",
                        "``moa-baseline`` is ``moa`` with beta 0: the MOA is an auxiliary task."),
    "vocabulary": ("Communication (``comm``, ``comm-baseline``)",
                   "``comm-baseline`` is ``comm`` with beta 0. Messages enter the LSTM as one-hots (the paper's "
                   "message embedding is a linear map before a linear gate layer: no extra power)."),
}


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


def merge(*layers: dict, preset: str | None = None) -> dict:
    """The field values of a run: each of ``layers`` (dicts of Config fields) over the ones before
    it, all over ``preset``'s values for the run's env and model (the dataclass defaults under
    everything). ``env_kwargs`` tables merge entry by entry; a whole-number float for an integer
    field becomes an int (TOML writes ``steps = 3e7`` as a float). Nothing is validated here:
    :func:`build_config` names a bad value, an unknown field, env or model."""
    values: dict = {}
    for layer in layers:
        for key, value in layer.items():
            if key in OPTIONS:
                value = OPTIONS[key].normalise(value)
            if key == "env_kwargs" and isinstance(value, dict) and isinstance(values.get(key), dict):
                value = {**values[key], **value}
            values[key] = value
    if preset is None:
        return values
    try:
        below = preset_values(preset, values.get("env", Config.env), values.get("model", Config.model))
    except (KeyError, TypeError):  # no such env or model (or not even a string): build_config names it
        return values
    return {**below, **values}


def build_config(values: dict) -> Config:
    """A validated Config from a dict of field values; ValueError naming the first bad field."""
    config = Config()
    for key, value in values.items():
        if key not in OPTIONS:
            raise ValueError(f"unknown option {key!r}")
        setattr(config, key, OPTIONS[key].convert(key, value))
    validate(config)
    return config


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

    for name, spec in OPTIONS.items():  # type, finite, choices and bounds, as each field declares them
        spec.check(name, getattr(c, name))
    # What no single field can say:
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
    need(c.model != "influence" or 1 <= c.influencers < c.agents,
         f"influencers must be between 1 and agents - 1 ({c.agents - 1}), got {c.influencers}")
    need(not (c.model in ("moa", "moa-baseline") and c.divergence == "pmi"),
         "the MOA models need divergence kl or jsd (pmi needs the influencee's next action)")
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
