"""One Harvest episode through the PettingZoo parallel API (pip install 'ssdinfluence[pettingzoo]').

    python examples/pettingzoo_random.py

``import ssdinfluence`` registers its ids with PettingZoo's registry (PettingZoo >= 1.27);
with an older PettingZoo, ``ssdinfluence.pettingzoo_env.make_parallel`` takes the same ids.
"""

import pettingzoo

import ssdinfluence  # noqa: F401  (registers ssdinfluence/cleanup-v0 and ssdinfluence/harvest-v0)

env = pettingzoo.make("parallel", "ssdinfluence/harvest-v0", num_agents=5, render_mode="rgb_array")
observations, infos = env.reset(seed=0)
returns = dict.fromkeys(env.possible_agents, 0.0)
while env.agents:
    actions = {agent: env.action_space(agent).sample() for agent in env.agents}
    observations, rewards, terminations, truncations, infos = env.step(actions)
    for agent, reward in rewards.items():
        returns[agent] += reward
print({agent: round(value, 1) for agent, value in returns.items()})
print("collective return:", sum(returns.values()), "| last frame:", env.render().shape)
