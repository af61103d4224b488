"""Advantage estimation, policy-gradient losses and the pieces of an update, per agent.

Shapes follow the trainer: time first, then envs, then agents: ``[T, B, N]``. Every loss
is a mean over samples for each agent and a sum over agents, so agent k's gradient is that of
its own loss only (agents share no parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def gae(rewards, values, dones, last_value, gamma: float, lam: float):
    """Generalised advantage estimation (Schulman et al. 2016).

    Args:
        rewards: ``[T, B, N]`` reward after the action at step t.
        values: ``[T, B, N]`` V(s_t).
        dones: ``[T, B]`` bool, the episode ended with step t (truncation is treated as the end:
            no bootstrap across it, as the paper's A3C does).
        last_value: ``[B, N]`` V(s_T) after the rollout.
    Returns:
        advantages ``[T, B, N]`` and returns (advantages + values) ``[T, B, N]``.
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(T)):
        nonterminal = (~dones[t]).to(rewards.dtype).unsqueeze(-1)  # [B, 1]
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        running = delta + gamma * lam * nonterminal * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


@dataclass
class LossTerms:
    """Scalars of one update step (means over samples, summed over agents)."""

    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def _agent_mean(x):
    """Mean over every axis but the last (agents), then the sum over agents."""
    return x.reshape(-1, x.shape[-1]).mean(0).sum()


def policy_loss_terms(logits, actions, old_logprobs, advantages, returns, values, *, clip: float | None,
                      value_coef: float, entropy_coef: float, huber_delta: float = 0.0) -> LossTerms:
    """PPO's clipped surrogate (``clip`` set) or the plain policy gradient of A2C (``clip=None``).

    Args:
        logits ``[..., N, A]``, actions ``[..., N]`` int64, old_logprobs ``[..., N]`` (ignored by
        A2C), advantages ``[..., N]``, returns ``[..., N]``, values ``[..., N]``.
    Loss per agent: policy term + value_coef * value term - entropy_coef * entropy, where the
    value term is 0.5 * (V - R)^2, or with ``huber_delta > 0`` Huber's loss: the same up to
    errors of ``huber_delta``, linear beyond, so one sample's value gradient is at most
    ``huber_delta`` (a -50 fine cannot swamp the shared trunk's gradient).
    """
    log_probs = torch.log_softmax(logits, dim=-1)
    logprobs = log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    if clip is None:
        policy = -(logprobs * advantages)
        approx_kl = clip_fraction = torch.zeros((), device=logits.device)
    else:
        log_ratio = logprobs - old_logprobs
        ratio = log_ratio.exp()
        policy = -torch.min(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
        with torch.no_grad():
            approx_kl = _agent_mean((ratio - 1) - log_ratio)
            clip_fraction = _agent_mean(((ratio - 1).abs() > clip).float())
    if huber_delta > 0:
        value = torch.nn.functional.huber_loss(values, returns, reduction="none", delta=huber_delta)
    else:
        value = 0.5 * (values - returns) ** 2
    policy_loss, value_loss, mean_entropy = _agent_mean(policy), _agent_mean(value), _agent_mean(entropy)
    loss = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    return LossTerms(loss, policy_loss, value_loss, mean_entropy, approx_kl, clip_fraction)


def normalise_per_agent(advantages, eps: float = 1e-8):
    """Zero mean, unit std per agent over all other axes: ``[..., N] -> [..., N]``."""
    flat = advantages.reshape(-1, advantages.shape[-1])
    return (advantages - flat.mean(0)) / (flat.std(0) + eps)


def clip_grad_norm_per_agent(parameters, num_agents: int, max_norm: float) -> torch.Tensor:
    """Clip each agent's gradient to global norm ``max_norm`` over all of its parameters.

    Every parameter's leading axis is agent-major (``[N, ...]`` or ``[N * k, ...]``), so agent
    k's gradient is ``p.grad.reshape(N, -1)[k]``. Clipping per agent keeps the agents
    independent: one agent's large gradient never shrinks another's step.
    Returns the agents' norms before clipping, ``[N]``.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    norms_sq = torch.zeros(num_agents, device=grads[0].device)
    for g in grads:
        norms_sq += g.reshape(num_agents, -1).pow(2).sum(1)
    norms = norms_sq.sqrt()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        per_row = scale.repeat_interleave(g.shape[0] // num_agents)  # [N] or [N * k]
        g.mul_(per_row.view(-1, *([1] * (g.dim() - 1))))
    return norms


def linear_schedule(start: float, end: float, progress: float) -> float:
    """``start`` at progress 0, ``end`` from progress 1 on (the paper's linear annealing)."""
    return start + (end - start) * min(max(progress, 0.0), 1.0)
