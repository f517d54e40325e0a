"""Benchmark: the fixed costs of training stages (tracing, BatchNorm
recalibration, curve points), which dominate short runs.

For each backbone family (a plain CNN x 0.5 and a ResNet-8 x 0.5) and
data set (digits, and 4,096 Fashion-MNIST training images when the
Debian package ``dataset-fashion-mnist`` is installed), times in this
process:

- ``fit_modes`` of 3 modes, 1 epoch (3 trainings of one architecture);
- ``fit_curves`` of every pair of those modes (3 curves), 1 epoch;
- ``recalibrate_batchnorm`` of a mode on the training set (median of 5,
  after a first call that traces);
- ``point_model`` of a curve at t = 0.3 with its BatchNorm statistics
  (median of 3).

It prints one line per figure, and the weights' checksum of the modes
and curves, which must not depend on the code's speed. Compare two
commits by running this file with ``PYTHONPATH`` set to each one's tree,
alternately (the machine is shared), e.g. with ``git worktree add``.

Usage:

    python benchmarks/fixed_costs.py
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import keras_bridge as kb  # noqa: E402


def datasets():
    yield "digits", kb.data.load_digits(batch_size=64)
    if os.path.isdir(kb.data.FASHION_MNIST_DIR):
        data = kb.data.load_fashion_mnist(batch_size=128)
        small = kb.data.DataSplits(
            train=data.train.take(32),
            validation=data.validation.take(8),
            test=data.test.take(8),
            input_shape=data.input_shape,
            num_classes=data.num_classes,
        )
        yield "fashion_mnist[:4096]", small


def backbones(data):
    shape, classes = data.input_shape, data.num_classes
    yield "plain_cnn", kb.models.plain_cnn(shape, classes, width=0.5)
    yield "resnet8", kb.models.resnet(shape, classes, depth=8, width=0.5)


def seconds(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def checksum(models) -> float:
    return float(
        sum(np.abs(np.asarray(w, "float64")).sum() for m in models
            for w in m.weights)
    )  # fmt: skip


def main():
    print(f"keras_bridge from {os.path.dirname(kb.__file__)}")
    for data_name, data in datasets():
        for family, backbone in backbones(data):
            name = f"{data_name} {family}"
            ens = kb.BridgeEnsemble(backbone, num_modes=3, seed=0)
            took, _ = seconds(ens.fit_modes, data.train, epochs=1, verbose=0)
            print(f"{name}: fit_modes (3 modes) {took:.2f} s")
            took, _ = seconds(
                ens.fit_curves, data.train, pairs="all", epochs=1, verbose=0
            )
            print(f"{name}: fit_curves (3 curves) {took:.2f} s")
            mode = ens.modes[0]
            kb.recalibrate_batchnorm(mode, data.train)
            times = [
                seconds(kb.recalibrate_batchnorm, mode, data.train)[0]
                for _ in range(5)
            ]
            print(
                f"{name}: recalibrate_batchnorm median "
                f"{statistics.median(times):.3f} s"
            )
            curve = ens.curves[(0, 1)]
            times = []
            for _ in range(3):
                took, _ = seconds(
                    kb.point_model, curve, 0.3, backbone, data=data.train
                )
                times.append(took)
            print(
                f"{name}: point_model median {statistics.median(times):.3f} s"
            )
            print(
                f"{name}: checksum modes {checksum(ens.modes):.6f} curves "
                f"{checksum(ens.curves.values()):.6f}"
            )


if __name__ == "__main__":
    main()
