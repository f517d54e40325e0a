"""Benchmark: training calls that trace their step once.

Two changes of 0.4 remove repeated traces without changing any result:

- `keras_bridge.compat.build_for_fit` creates an optimizer's, loss's and
  metrics' variables before `fit` (Keras does it inside the first trace of
  the training step when there is no distribution strategy, and a variable
  created there makes TensorFlow trace the step again);
- `keras_bridge.distillation.TeacherBank` runs a t-conditioned bridge's
  eleven teachers as one network (they were traced as eleven branches).

This times `fit_modes` (2 modes), `fit_curves` and `fit_bridge(t="any")`
(1 epoch each, so the fixed cost shows) with both changes and with both
turned off (the former behaviour), alternating the two ``--repeats``
times in one process, for each backbone and data set. It prints the
medians and their ratio, and checks that the weights are the same, bit
for bit, either way.

Usage:

    python benchmarks/trace_once.py --data digits fashion_mnist
"""

import argparse
import hashlib
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from recalibration import BACKBONES  # noqa: E402 (the same two backbones)

import keras_bridge as kb  # noqa: E402
from keras_bridge import compat, distillation  # noqa: E402

CALLS = ("fit_modes", "fit_curves", "fit_bridge(t='any')")


def _data(name):
    """All of digits; 2,048 Fashion-MNIST training images."""
    if name == "digits":
        return kb.data.load_digits()
    data = kb.data.load_fashion_mnist(batch_size=128)
    return data, data.train.take(16)


def _run(data_name, build):
    # Fresh data each run: a dataset reshuffles each time it is read.
    loaded = _data(data_name)
    data, train = loaded if isinstance(loaded, tuple) else (
        loaded, loaded.train
    )  # fmt: skip
    keras.utils.set_random_seed(0)  # the backbone's initial weights
    ens = kb.BridgeEnsemble(build(data), num_modes=2, seed=0)
    seconds = []
    for call in (
        lambda: ens.fit_modes(train, epochs=1, verbose=0),
        lambda: ens.fit_curves(train, epochs=1, verbose=0),
        lambda: ens.fit_bridge(train, t="any", epochs=1, verbose=0),
    ):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    digest = hashlib.sha256()
    models = [*ens.modes, *ens.curves.values(), *ens.bridges.values()]
    for weight in (w for model in models for w in model.weights):
        digest.update(np.asarray(weight).tobytes())
    return seconds, digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=["digits"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    build_for_fit, bank = compat.build_for_fit, distillation.TeacherBank.of
    print("| data | backbone | call | before (s) | now (s) | ratio |")
    print("|---|---|---|---|---|---|")
    for data_name in args.data:
        for backbone, build in BACKBONES.items():
            # A first run of a process differs from the next ones (in
            # time, and in TensorFlow's random state): not counted.
            _run(data_name, build)
            keras.backend.clear_session()
            times = {"before": [], "now": []}
            digests = set()
            for _ in range(args.repeats):
                for setting in ("before", "now"):
                    if setting == "before":
                        compat.build_for_fit = lambda model, data: None
                        distillation.TeacherBank.of = classmethod(
                            lambda cls, teachers: None
                        )
                    seconds, digest = _run(data_name, build)
                    compat.build_for_fit = build_for_fit
                    distillation.TeacherBank.of = bank
                    keras.backend.clear_session()
                    times[setting].append(seconds)
                    digests.add(digest)
            for index, call in enumerate(CALLS):
                before = np.median([t[index] for t in times["before"]])
                now = np.median([t[index] for t in times["now"]])
                print(
                    f"| {data_name} | {backbone} | {call} | {before:.1f} | "
                    f"{now:.1f} | {now / before:.2f} |",
                    flush=True,
                )
            same = "same" if len(digests) == 1 else "DIFFERENT"
            print(f"<!-- {data_name} {backbone}: weights {same} -->")


if __name__ == "__main__":
    main()
