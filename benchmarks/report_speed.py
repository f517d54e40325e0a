"""Benchmark: what `evaluate` and `fit_bridge` cost besides the data.

Trains a ResNet-8 x 0.5 ensemble on digits for one epoch per stage (two
modes, their curve, a Type I, a Type II and a t-conditioned bridge: the
test suite's ensemble; FLOPs and tracing do not depend on how long it
trained), saves it, then times in fresh loads of that file:

- ``evaluate(test)`` of the whole ensemble;
- ``fit_bridge`` of one Type I bridge on 2 batches for 1 epoch (head
  sizing, distillation set-up and tracing; the training is 2 steps).

Each is timed ``--runs`` times on a new load; the script prints the
median and the range. Run it on two commits to compare them (the machine
is shared: run them back to back, and again in the other order).

Usage:

    python benchmarks/report_speed.py --runs 3
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_bridge as kb  # noqa: E402


def train(path, digits):
    backbone = kb.models.resnet(
        digits.input_shape, digits.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(digits.train, epochs=1, verbose=0)
    ens.fit_curves(digits.train, epochs=1, verbose=0)
    ens.save(path.replace(".keras", "_curves.keras"))
    ens.fit_bridge(digits.train, kind="type1", epochs=1, verbose=0)
    ens.fit_bridge(digits.train, kind="type2", epochs=1, verbose=0)
    ens.fit_bridge(digits.train, t="any", epochs=1, verbose=0)
    ens.save(path)


def timed(method, *args, **kwargs) -> float:
    start = time.perf_counter()
    method(*args, **kwargs)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    digits = kb.data.load_digits(batch_size=64)
    path = os.path.join(tempfile.mkdtemp(), "ensemble.keras")
    train(path, digits)
    seconds = {"evaluate": [], "fit_bridge": []}
    for _ in range(args.runs):
        ens = kb.BridgeEnsemble.load(path)
        seconds["evaluate"].append(timed(ens.evaluate, digits.test))
        ens = kb.BridgeEnsemble.load(path.replace(".keras", "_curves.keras"))
        seconds["fit_bridge"].append(
            timed(ens.fit_bridge, digits.train.take(2), epochs=1, verbose=0)
        )
    for name, values in seconds.items():
        print(
            f"{name}: median {np.median(values):.2f} s "
            f"(range {min(values):.2f}-{max(values):.2f} s, "
            f"first {values[0]:.2f} s, {len(values)} runs)"
        )


if __name__ == "__main__":
    main()
