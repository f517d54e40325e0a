"""Benchmark: cost of curve training and of a materialised curve point.

Prints, as ratios measured in one process on this machine (medians of
interleaved repeats):

- training step time of the curve model vs the plain backbone on the same
  batch (goal <= 1.3x);
- inference time of a materialised point (`keras_bridge.point_model`) vs
  the plain backbone (goal <= 1.05x).

Usage: python benchmarks/curves.py [--depth 20] [--width 1] [--batch 128]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_bridge as kb  # noqa: E402


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _interleaved(fns, rounds, repeats):
    results = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            results[name].append(_median_time(fn, repeats))
    return {name: float(np.median(v)) for name, v in results.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    shape = (args.size, args.size, 3)
    make = lambda: kb.models.resnet(  # noqa: E731
        shape, 10, depth=args.depth, width=args.width
    )
    plain, other = make(), make()
    curve_model = kb.to_curve_model(plain, other)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.batch, *shape)).astype("float32")
    y = rng.integers(0, 10, args.batch)
    t = np.full((args.batch, 1), 0.37, "float32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for model in (plain, curve_model):
        model.compile(optimizer="sgd", loss=loss, jit_compile=False)
    point = kb.point_model(curve_model, 0.5, plain, data=[x])

    # Warm up: trace every function once.
    plain.train_on_batch(x, y)
    curve_model.train_on_batch([x, t], y)
    plain.predict_on_batch(x)
    point.predict_on_batch(x)

    train = _interleaved(
        {
            "plain": lambda: plain.train_on_batch(x, y),
            "curve": lambda: curve_model.train_on_batch([x, t], y),
        },
        args.rounds,
        args.repeats,
    )
    infer = _interleaved(
        {
            "plain": lambda: plain.predict_on_batch(x),
            "point": lambda: point.predict_on_batch(x),
        },
        args.rounds,
        args.repeats,
    )
    print(
        f"ResNet-{args.depth}x{args.width:g}, input {shape}, batch "
        f"{args.batch}, {os.cpu_count()} CPU cores"
    )
    print(
        f"train step   plain {1e3 * train['plain']:8.1f} ms   curve "
        f"{1e3 * train['curve']:8.1f} ms   ratio "
        f"{train['curve'] / train['plain']:.2f}x  (goal <= 1.30x)"
    )
    print(
        f"inference    plain {1e3 * infer['plain']:8.1f} ms   point "
        f"{1e3 * infer['point']:8.1f} ms   ratio "
        f"{infer['point'] / infer['plain']:.2f}x  (goal <= 1.05x)"
    )


if __name__ == "__main__":
    main()
