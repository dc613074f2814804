"""``pyprune prune`` through the Python API, for models whose scores are not their first output.

The command line judges a model by its first output; skl2onnx classifiers put the int64 label
there and the probabilities second, and the command line has no flag (yet) to choose another
output. The recovery benchmark runs this script instead for such models, with the same arguments
it gives the command line plus ``--score-output N``; it prunes with
``metrics.accuracy(output=N)`` and ``loss="kl"`` on that output, and writes the model like the CLI.
Exit codes as the CLI's: 0 target reached under the constraint, 1 not reached, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import pyprune
from pyprune import metrics
from pyprune.targets import make_target


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("model")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--score-output", type=int, required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--max-drop", default="0.01")
    parser.add_argument("--strategy", default="greedy")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--recovery", default="auto")
    parser.add_argument("--quiet", action="store_true")
    for kind in ("macs", "params"):
        parser.add_argument(f"--{kind}", type=float)
    args = parser.parse_args()
    kind = "macs" if args.macs is not None else "params"
    with np.load(args.data) as npz:
        x = {k: npz[k] for k in npz.files if k != args.labels}
        y = npz[args.labels]
    drop = None if args.max_drop.lower() == "none" else float(args.max_drop)
    probabilities = metrics.accuracy(output=args.score_output)
    result = pyprune.prune(args.model, pyprune.Dataset(x, y), strategy=args.strategy,
                           target=make_target(kind, getattr(args, kind)), max_drop=drop, metric=probabilities,
                           loss=metrics.probability_kl(output=args.score_output), recovery=args.recovery,
                           threads=args.threads, quiet=args.quiet, measure_latency=False)
    result.model.save(args.output)
    print(result.statement)
    return 0 if result.met else 1


if __name__ == "__main__":
    sys.exit(main())
