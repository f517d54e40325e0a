"""Benchmark: the size, save time and load time of a saved ensemble, with
curve points stored as their statistics (archive format 4) or whole.

For each backbone family (a plain CNN x 0.5 and a ResNet-8 x 0.5) and
data set (digits, and 4,096 Fashion-MNIST training images when the
Debian package ``dataset-fashion-mnist`` is installed), trains 2 modes,
their curve, a Type I bridge (one teacher: t = 0.5) and a t-conditioned
one (eleven teachers), 1 epoch each, then in this process, alternately:

- saves the ensemble with each point stored as its non-trainable weights
  (``statistics``, the default) or as a whole network (``whole``, what
  format 2 and 3 files hold), and prints the file's size;
- times `BridgeEnsemble.save` and `BridgeEnsemble.load` of each file
  (medians of 5), and ``load`` followed by building every point
  (``point_model`` of each), once;

and checks that each loaded ensemble predicts exactly what the trained
one predicts and that each rebuilt point equals its original, weight for
weight.

Usage:

    python benchmarks/archive.py
"""

import os
import statistics
import tempfile
import time
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from fixed_costs import backbones, datasets  # noqa: E402 (the same four)

import keras_bridge as kb  # noqa: E402
from keras_bridge import archive  # noqa: E402


def whole(points, curves, template):
    """`archive._split_points` storing every point whole."""
    return {key: points[key] for key in points}, {}


#: How each layout splits the points (statistics, whole models).
SPLITS = {"statistics": archive._split_points, "whole": whole}


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main():
    folder = tempfile.mkdtemp()
    for data_name, data in datasets():
        x, _ = kb.data.to_numpy(data.test)
        for family, backbone in backbones(data):
            ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
            ens.fit_modes(data.train, epochs=1, verbose=0)
            ens.fit_curves(data.train, epochs=1, verbose=0)
            ens.fit_bridge(data.train, epochs=1, verbose=0)
            ens.fit_bridge(data.train, t="any", epochs=1, verbose=0)
            expected = ens.predict(x, verbose=0)["probabilities"]
            paths = {
                layout: os.path.join(folder, f"{family}-{layout}.keras")
                for layout in ("statistics", "whole")
            }
            saves = {layout: [] for layout in paths}
            loads = {layout: [] for layout in paths}
            for _ in range(5):
                for layout, path in paths.items():
                    split = (
                        whole if layout == "whole" else archive._split_points
                    )
                    with mock.patch.object(archive, "_split_points", split):
                        took, _ = timed(ens.save, path, overwrite=True)
                    saves[layout].append(took)
                    took, loaded = timed(kb.BridgeEnsemble.load, path)
                    loads[layout].append(took)
            print(f"== {data_name}, {family}: {len(ens.curve_points)} points")
            for layout, path in paths.items():
                start = time.perf_counter()
                loaded = kb.BridgeEnsemble.load(path)
                rebuilt = {
                    key: loaded.point_model(*key) for key in ens.curve_points
                }
                everything = time.perf_counter() - start
                got = loaded.predict(x, verbose=0)["probabilities"]
                same_points = all(
                    all(
                        np.array_equal(u, v)
                        for u, v in zip(
                            rebuilt[key].get_weights(),
                            ens.curve_points[key].get_weights(),
                        )
                    )
                    for key in rebuilt
                )
                print(
                    f"{layout:>10}: {os.path.getsize(path) / 1e6:.2f} MB, "
                    f"save {statistics.median(saves[layout]):.2f} s, "
                    f"load {statistics.median(loads[layout]):.2f} s "
                    f"({min(loads[layout]):.2f}-{max(loads[layout]):.2f}), "
                    f"load + build every point {everything:.2f} s; "
                    f"predicts the same: {np.array_equal(got, expected)}, "
                    f"points the same: {same_points}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
