"""Benchmark: BatchNorm recalibration with one traced function per
architecture against one per model.

`curve_profile` recomputes the BatchNorm statistics of every point it
scores (`keras_bridge.recalibrate_batchnorm`), as do a t-conditioned
bridge's eleven teachers. Since 0.4 the moment function is traced once
per architecture and reused with each point's weights. This times
`BridgeEnsemble.curve_profile(num_points=11)` of an ensemble of two
untrained modes (the cost does not depend on training) with the shared
function and with sharing turned off (the former behaviour: a trace per
point), alternating the two ``--repeats`` times in one process, for each
backbone and data set. It prints the medians and their ratio.

Usage:

    python benchmarks/recalibration.py --data digits fashion_mnist
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_bridge as kb  # noqa: E402
from keras_bridge import curve_model  # noqa: E402

BACKBONES = {
    "resnet-8x0.5": lambda d: kb.models.resnet(
        d.input_shape, d.num_classes, depth=8, width=0.5
    ),
    "plain_cnn-x0.5": lambda d: kb.models.plain_cnn(
        d.input_shape, d.num_classes, width=0.5
    ),
}


def _data(name):
    """The splits, and the statistics and scoring data: all of digits;
    2,048 and 1,024 Fashion-MNIST images."""
    if name == "digits":
        data = kb.data.load_digits()
        return data, data.train, data.test
    data = kb.data.load_fashion_mnist(batch_size=128)
    return data, data.train.take(16), data.test.take(8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["digits"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    kept = curve_model._MOMENT_FUNCTIONS_KEPT
    print("| data | backbone | per model (s) | per architecture (s) | ratio |")
    print("|---|---|---|---|---|")
    for data_name in args.data:
        data, train, test = _data(data_name)
        for name, build in BACKBONES.items():
            backbone = build(data)
            ens = kb.BridgeEnsemble(backbone, seed=0)
            ens.set_modes([keras.models.clone_model(backbone) for _ in "ab"])
            times = {"per model": [], "per architecture": []}
            for _ in range(args.repeats):
                for setting, keep in (
                    ("per model", 0),
                    ("per architecture", kept),
                ):
                    curve_model._MOMENT_FUNCTIONS_KEPT = keep
                    curve_model._MOMENT_FUNCTIONS.clear()
                    start = time.perf_counter()
                    ens.curve_profile(test, num_points=11, bn_data=train)
                    times[setting].append(time.perf_counter() - start)
            curve_model._MOMENT_FUNCTIONS_KEPT = kept
            before = np.median(times["per model"])
            after = np.median(times["per architecture"])
            print(
                f"| {data_name} | {name} | {before:.1f} | {after:.1f} | "
                f"{after / before:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
