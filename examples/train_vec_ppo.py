"""An outside trainer on the flat vector view: CleanRL-style PPO, one network shared by all agents.

    python examples/train_vec_ppo.py --env harvest --num-envs 8 --agents 5 --steps 300000

``ssdinfluence.make_vec`` turns B envs of N agents into one gymnasium vector env of B * N
entries, so any single-agent trainer that takes a ``gymnasium.vector.VectorEnv`` trains
parameter-shared agents on it. This loop is such a trainer, written out: a feed-forward
version of the paper's network (conv 6x3x3, FC 32, FC 32, policy and value heads), GAE, the
clipped PPO loss. Episodes end only by truncation at the horizon, and the view resets in the
same step (``SAME_STEP``), so the last step of an episode bootstraps from the value of
``info["final_obs"]`` rather than from the next episode's first view.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import ssdinfluence


class Agent(nn.Module):
    def __init__(self, num_actions: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 13 * 13, 32), nn.ReLU(),
                                  nn.Linear(32, 32), nn.ReLU())
        self.policy, self.value = nn.Linear(32, num_actions), nn.Linear(32, 1)

    def forward(self, obs: torch.Tensor):
        """``obs`` [M, 15, 15, 3] uint8 -> (logits [M, A], value [M])."""
        hidden = self.body(obs.permute(0, 3, 1, 2).float() / 255.0)
        return self.policy(hidden), self.value(hidden).squeeze(-1)


def train(env: str = "harvest", num_envs: int = 8, agents: int = 5, steps: int = 300_000, rollout: int = 128,
          epochs: int = 2, minibatches: int = 4, lr: float = 1e-3, gamma: float = 0.99, lam: float = 0.95,
          clip: float = 0.2, entropy_coef: float = 0.01, seed: int = 0, horizon: int = 1000, log=print) -> list[dict]:
    """Train and return one dict per update: ``env_steps``, ``episode_return`` (mean per agent over the
    episodes that ended in it, NaN if none), ``policy_loss``, ``value_loss``, ``entropy``."""
    torch.manual_seed(seed)
    envs = ssdinfluence.make_vec(env, num_envs=num_envs, num_agents=agents, seed=seed, horizon=horizon)
    M = envs.num_envs  # B * N entries, one per agent
    model = Agent(envs.single_action_space.n)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-5)
    obs_buf = torch.zeros((rollout, M, 15, 15, 3), dtype=torch.uint8)
    actions, logprobs, rewards, values, bootstrap = (torch.zeros((rollout, M)) for _ in range(5))
    ends = torch.zeros((rollout, M), dtype=torch.bool)
    obs, _ = envs.reset(seed=seed)
    history = []
    for update in range(1, steps // (num_envs * rollout) + 1):
        start, finished = time.perf_counter(), []
        for t in range(rollout):
            obs_buf[t] = torch.from_numpy(obs)  # copied here: the view's buffers are reused by the next step
            with torch.no_grad():
                logits, values[t] = model(obs_buf[t])
            dist = torch.distributions.Categorical(logits=logits)
            actions[t] = dist.sample()
            logprobs[t] = dist.log_prob(actions[t])
            obs, reward, terminations, truncations, info = envs.step(actions[t].long().numpy())
            rewards[t] = torch.from_numpy(reward)
            ends[t] = torch.from_numpy(terminations | truncations)
            bootstrap[t] = 0.0
            if truncations.any():  # truncated, not terminated: the episode's value goes on after its last view
                done = np.flatnonzero(truncations & ~terminations)
                with torch.no_grad():
                    _, final_values = model(torch.from_numpy(np.stack(info["final_obs"][done])))
                bootstrap[t, done] = final_values
                finished.append(info["final_info"]["episode_return"][truncations])
        with torch.no_grad():
            _, next_value = model(torch.from_numpy(obs))
        advantages, last = torch.zeros_like(rewards), torch.zeros(M)
        for t in reversed(range(rollout)):
            following = next_value if t == rollout - 1 else values[t + 1]
            following = torch.where(ends[t], bootstrap[t], following)
            delta = rewards[t] + gamma * following - values[t]
            last = delta + gamma * lam * torch.where(ends[t], 0.0, last)
            advantages[t] = last
        returns = advantages + values
        flat = [x.reshape(rollout * M, *x.shape[2:]) for x in (obs_buf, actions, logprobs, advantages, returns)]
        for _ in range(epochs):
            for batch in torch.randperm(rollout * M).chunk(minibatches):
                b_obs, b_actions, b_logprobs, b_adv, b_returns = (x[batch] for x in flat)
                logits, value = model(b_obs)
                dist = torch.distributions.Categorical(logits=logits)
                ratio = (dist.log_prob(b_actions) - b_logprobs).exp()
                b_adv = (b_adv - b_adv.mean()) / (b_adv.std() + 1e-8)
                policy_loss = torch.max(-b_adv * ratio, -b_adv * ratio.clamp(1 - clip, 1 + clip)).mean()
                value_loss = 0.5 * (value - b_returns).pow(2).mean()
                entropy = dist.entropy().mean()
                loss = policy_loss + 0.5 * value_loss - entropy_coef * entropy
                optimiser.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 0.5)
                optimiser.step()
        episode_return = float(np.concatenate(finished).mean()) if finished else float("nan")
        row = {"env_steps": update * num_envs * rollout, "episode_return": episode_return,
               "policy_loss": policy_loss.item(), "value_loss": value_loss.item(), "entropy": entropy.item()}
        history.append(row)
        log(f"update {update}: {row['env_steps']:,} env steps, episode return per agent {episode_return:.1f}, "
            f"entropy {row['entropy']:.3f}, {num_envs * rollout / (time.perf_counter() - start):,.0f} env steps/s")
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="harvest", choices=["cleanup", "harvest"])
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--steps", type=float, default=300_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rollout", type=int, default=128, help="steps per env between updates")
    parser.add_argument("--horizon", type=int, default=1000, help="episode length")
    args = parser.parse_args()
    train(args.env, args.num_envs, args.agents, int(args.steps), rollout=args.rollout, seed=args.seed,
          horizon=args.horizon)
