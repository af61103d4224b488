"""Batched random rollout: 64 Cleanup envs x 5 agents, collective return per episode.

    python examples/random_rollout.py --env harvest --num-envs 64 --episodes 3
"""

import argparse

import numpy as np

import ssdinfluence

parser = argparse.ArgumentParser()
parser.add_argument("--env", default="cleanup", choices=ssdinfluence.ENV_NAMES)
parser.add_argument("--num-envs", type=int, default=64)
parser.add_argument("--agents", type=int, default=5)
parser.add_argument("--episodes", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

env = ssdinfluence.make(args.env, num_envs=args.num_envs, num_agents=args.agents, seed=args.seed)
obs, info = env.reset()  # obs: [B, N, 15, 15, 3] uint8
rng = np.random.default_rng(args.seed)
episode = 0
while episode < args.episodes:
    actions = rng.integers(0, env.num_actions, (env.num_envs, env.num_agents))  # [B, N]
    obs, rewards, terminated, truncated, info = env.step(actions)
    if truncated.any():  # all envs share the horizon, so they finish together
        collective = info["episode_returns"][truncated].sum(axis=1)  # [B_done]
        episode += 1
        print(f"episode {episode}: collective return mean {collective.mean():8.1f}  "
              f"min {collective.min():8.1f}  max {collective.max():8.1f}  over {len(collective)} envs")
