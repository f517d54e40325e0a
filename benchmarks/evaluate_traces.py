"""Benchmark: `evaluate` traces each network once.

`evaluate`, `calibrate` and `select_members` stream their data through
`keras_bridge.evaluation.batch_predictor`, one `tf.function` per network
with an unknown batch size. They used ``model.predict_on_batch``, which
traces its step for the first batch's shape and again for the last,
smaller batch.

This builds one ensemble per backbone and data set (2 modes, their
curve, a Type I, a Type II and a t-conditioned bridge, 1 epoch each on
a few batches: tracing, not quality, is measured), saves it, and then
alternates, ``--repeats`` times, loading it and calling
``evaluate(test, calibration_data=validation)`` with each way of
predicting. It prints the median CPU seconds of each and their ratio,
and checks that both reports hold the same figures.

Usage:

    python benchmarks/evaluate_traces.py --data digits fashion_mnist

The log of the run quoted in CHANGELOG.md is
``benchmarks/logs/evaluate_traces.log``.
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from recalibration import BACKBONES  # noqa: E402 (the same two backbones)

import keras_bridge as kb  # noqa: E402
from keras_bridge import evaluation  # noqa: E402


def _data(name):
    """All of digits; 2,048 Fashion-MNIST training images, its 5,000
    validation images and 10,000 test images."""
    if name == "digits":
        return kb.data.load_digits(), None
    data = kb.data.load_fashion_mnist(batch_size=128)
    return data, data.train.take(16)


def _former(model, output=None):
    """The former way: Keras' ``predict_on_batch``."""
    if output is None:
        return model.predict_on_batch
    return lambda x: model.predict_on_batch(x)[output]


def _build(train, backbone, path):
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(train, epochs=1, verbose=0)
    ens.fit_curves(train, epochs=1, verbose=0)
    ens.fit_bridge(train, kind="type1", epochs=1, verbose=0)
    ens.fit_bridge(train, kind="type2", epochs=1, verbose=0)
    ens.fit_bridge(train, t="any", epochs=1, verbose=0)
    ens.save(path)


def _figures(report):
    return [
        (row["name"], round(row["accuracy"], 6), round(row["nll"], 6))
        for row in report.rows
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["digits"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    now = evaluation.batch_predictor
    print("| data | backbone | before (CPU s) | now (CPU s) | ratio |")
    print("|---|---|---|---|---|")
    for data_name in args.data:
        data, train = _data(data_name)
        train = data.train if train is None else train
        for name, build in BACKBONES.items():
            path = os.path.join(tempfile.mkdtemp(), "ensemble.keras")
            _build(train, build(data), path)
            seconds = {"before": [], "now": []}
            figures = {}
            for _ in range(args.repeats):
                for way, predictor in (("before", _former), ("now", now)):
                    evaluation.batch_predictor = predictor
                    ens = kb.BridgeEnsemble.load(path)
                    started = time.process_time()
                    report = ens.evaluate(
                        data.test, calibration_data=data.validation
                    )
                    seconds[way].append(time.process_time() - started)
                    figures[way] = _figures(report)
            evaluation.batch_predictor = now
            assert figures["before"] == figures["now"], figures
            before, after = (
                statistics.median(seconds[w]) for w in ("before", "now")
            )
            print(
                f"| {data_name} | {name} | {before:.2f} | {after:.2f} | "
                f"{after / before:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
