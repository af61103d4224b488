"""Replay the last logged episode of a run as a GIF: the map, every agent's view, influence arrows.

    python examples/render_replay.py runs/cleanup-influence-ppo-s0 -o replay.gif
    python examples/render_replay.py runs/cleanup-influence-ppo-s0 --frames 0:300   # the first 300 steps

Needs a run trained with an influence model (``--model influence``, ``moa`` or ``comm``: they
log ``influence_pairs``; pass ``--no-influence`` for others) and the viz extra
(``pip install "ssdinfluence[viz]"``). The same as
``ssdinfluence render RUN_DIR -e -1 --views --influence -o replay.gif``.
"""

import argparse
import time

from ssdinfluence.render import open_log, render_episode, write_video

parser = argparse.ArgumentParser()
parser.add_argument("run_dir", help="run directory (or its trajectories.h5)")
parser.add_argument("-o", "--output", default="replay.gif")
parser.add_argument("--frames", default=":", help="steps a:b of the episode")
parser.add_argument("--no-influence", dest="influence", action="store_false")
args = parser.parse_args()
start, stop = (int(x) if x else None for x in args.frames.split(":"))

began = time.perf_counter()
with open_log(args.run_dir) as reader:  # a TrajectoryReader
    print(reader)
    frames = render_episode(reader, episode=-1, start=start or 0, stop=stop, views=True, influence=args.influence)
write_video(frames, args.output, fps=20)  # frames: [T, H', W', 3] uint8
print(f"wrote {args.output}: {len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} px "
      f"in {time.perf_counter() - began:.1f} s")
