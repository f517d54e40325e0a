"""Benchmark: two saved Fashion-MNIST ensembles, compared image by image.

Reads two ensembles that `benchmarks/fashion_mnist.py` saved (typically
the same modes and curves with bridges from two recipes, ``--reuse``)
and prints, for each configuration both have (Single + k Type I, DE-2 +
Type II, ...), the calibrated NLL and accuracy of each and the paired
difference B - A with a 95 % bootstrap interval over the 10,000 test
images. Pairing removes the test set's own noise, which dominates the
unpaired intervals of `fashion_mnist.py`.

Needs the Debian package ``dataset-fashion-mnist``.

Usage: python benchmarks/compare_ensembles.py A.keras B.keras
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from fashion_mnist import arrays, configurations, per_image  # noqa: E402

import keras_bridge as kb  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", metavar="A.keras")
    parser.add_argument("b", metavar="B.keras")
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)

    splits = arrays(kb.data.load_fashion_mnist())
    count = len(splits[1][1])
    samples = np.random.default_rng(0).integers(
        0, count, (args.bootstrap, count)
    )
    ensembles = [kb.BridgeEnsemble.load(p) for p in (args.a, args.b)]
    configs = [configurations(ens) for ens in ensembles]
    print(f"A: {args.a}\nB: {args.b}\n")
    print(
        "| configuration | cNLL A | cNLL B | B - A (95 % CI) "
        "| accuracy A | accuracy B | B - A (95 % CI) |\n"
        "|---|---|---|---|---|---|---|"
    )
    for name in configs[0]:
        if configs[1].get(name) is None:
            continue
        (ca, na), (cb, nb) = (
            per_image(ens, splits, c[name])
            for ens, c in zip(ensembles, configs)
        )
        cells = []
        for a, b in ((na, nb), (ca, cb)):
            diff = [(b[s] - a[s]).mean() for s in samples]
            cells.append(
                f"{a.mean():.4f} | {b.mean():.4f} | {(b - a).mean():+.4f} "
                f"({np.percentile(diff, 2.5):+.4f} to "
                f"{np.percentile(diff, 97.5):+.4f})"
            )
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
