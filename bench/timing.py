"""Timing helpers shared by the bench scripts.

On a shared machine whose speed drifts from minute to minute, two things timed one after the
other differ by the drift as much as by themselves: :func:`alternated` times them in turns,
round by round, so that ratios of the same round compare like with like.
"""

from __future__ import annotations

import statistics
import time


def timed(fn, repeats: int) -> float:
    """Seconds per call of ``fn`` over ``repeats`` calls, after one untimed call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def alternated(fns: dict, rounds: int, turn_s: float = 2e-3) -> dict:
    """Seconds per call of each function in ``fns`` (name -> no-argument callable), timed in
    turns that alternate round by round, each turn about ``turn_s`` of calls: a list of
    ``rounds`` values per name."""
    calls = {name: max(1, int(turn_s / max(timed(fn, 1), 1e-7))) for name, fn in fns.items()}
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
    return times


def old_new_summary(times: dict) -> dict:
    """From :func:`alternated`'s times of ``"old"`` and ``"new"``: each one's median in ms and
    the median and quartiles of the per-round ratio new / old."""
    old, new = times["old"], times["new"]
    ratios = sorted(b / a for a, b in zip(old, new, strict=True))
    quartile = statistics.quantiles(ratios, n=4, method="inclusive")
    return {"old_ms": 1e3 * statistics.median(old), "new_ms": 1e3 * statistics.median(new),
            "ratio_median": statistics.median(ratios), "ratio_q1": quartile[0], "ratio_q3": quartile[2]}
