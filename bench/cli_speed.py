"""Start-up time of the command line: ``ssdinfluence --help`` and ``run --help`` in fresh processes.

    python bench/cli_speed.py            # table, JSON in bench/results/cli_speed.json

Goal: ``--help`` under 0.5 s. The reading commands and --help load neither torch nor the
Numba kernels (tests/test_cli_light.py checks ``sys.modules``); this measures what is left.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def seconds(args: list[str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ssdinfluence.cli", *args], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_speed.json"))
    args = parser.parse_args()
    rows = []
    for command in (["--help"], ["run", "--help"], ["sweep", "--help"]):
        times = seconds(command, args.repeats)
        rows.append({"command": " ".join(command), "min_s": round(min(times), 3),
                     "median_s": round(statistics.median(times), 3), "runs": [round(t, 3) for t in times]})
    bare = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - start)
    print(f"{'command':<26} {'min s':>7} {'median s':>9}")
    for r in rows:
        print(f"{'ssdinfluence ' + r['command']:<26} {r['min_s']:>7.3f} {r['median_s']:>9.3f}")
    print(f"{'python -c pass':<26} {min(bare):>7.3f} {statistics.median(bare):>9.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "python_startup_median_s": round(statistics.median(bare), 3)},
                              indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
