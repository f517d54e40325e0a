"""Benchmark: does recomputing a mode's BatchNorm statistics hurt it?

`fit_modes` ends by recomputing each mode's BatchNorm moving statistics
exactly on the training data (`keras_bridge.recalibrate_batchnorm`). This
trains modes as `fit_modes` does (`keras_bridge.training.fit_classifier`,
the default optimizer), then scores each on the test set twice: with the
moving averages Keras kept, and after the recomputation. It prints, per
data set and backbone, the test NLL and accuracy of both and the paired
difference (after minus before) over the seeds, with its range.

Usage:

    python benchmarks/bn_recalibration.py --data digits --epochs 20
    python benchmarks/bn_recalibration.py --data fashion_mnist --epochs 3 \\
        --train-size 20000
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_bridge as kb  # noqa: E402

BACKBONES = {
    "resnet": lambda data: kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    ),
    "cnn": lambda data: kb.models.plain_cnn(
        data.input_shape, data.num_classes, width=0.25
    ),
    "mobilenet": lambda data: kb.models.mobilenet_v3_style(
        data.input_shape, data.num_classes, width=0.5
    ),
}


def load(name, train_size):
    if name == "digits":
        data = kb.data.load_digits()
    else:
        data = kb.data.load_fashion_mnist()
    if train_size:
        batch = next(iter(data.train))[0].shape[0]
        data.train = data.train.take(train_size // batch)
    return data


def scores(model, x, y):
    probs = kb.metrics.softmax(model.predict(x, batch_size=512, verbose=0))
    return kb.metrics.nll(probs, y), kb.metrics.accuracy(probs, y)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["digits", "fashion_mnist"])
    parser.add_argument("--backbones", default="resnet,cnn")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=0)
    args = parser.parse_args()
    data = load(args.data, args.train_size)
    x, y = kb.data.to_numpy(data.test)
    steps = int(data.train.cardinality())
    options = {
        "epochs": args.epochs, "optimizer": None, "learning_rate": 2e-3,
        "callbacks": None, "verbose": 0, "validation_data": None,
    }  # fmt: skip
    print(f"{args.data}, {args.epochs} epochs, seeds 0..{args.seeds - 1}")
    for name in args.backbones.split(","):
        rows = []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)
            model = keras.models.clone_model(BACKBONES[name](data))
            kb.training.fit_classifier(model, data.train, steps, options, name)
            before = scores(model, x, y)
            kb.recalibrate_batchnorm(model, data.train)
            after = scores(model, x, y)
            rows.append((*before, *after))
            print(
                f"  {name} seed {seed}: NLL {before[0]:.4f} -> {after[0]:.4f}"
                f", acc {before[1]:.4f} -> {after[1]:.4f}"
            )
        rows = np.asarray(rows)
        for label, b, a in (("NLL", 0, 2), ("acc", 1, 3)):
            change = rows[:, a] - rows[:, b]
            print(
                f"{name} {label}: moving {rows[:, b].mean():.4f}, exact "
                f"{rows[:, a].mean():.4f}, change median "
                f"{np.median(change):+.4f}"
                f" (range {change.min():+.4f} .. {change.max():+.4f})"
            )
    tf.keras.backend.clear_session()


if __name__ == "__main__":
    main()
