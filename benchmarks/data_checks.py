"""Benchmark: what the data checks cost, and evaluate's peak memory.

On Fashion-MNIST (`keras_bridge.data.load_fashion_mnist`, batches of
128: 430 training, 40 validation and 79 test batches):

1. Per data set and check mode (`keras_bridge.data_checks.set_data_checks`):
   the seconds `data_checks.checked` takes before a stage runs (``"full"``: a
   pass in Python over every batch; ``"in_pipeline"``: the first batch),
   and the seconds the in-pipeline asserts add to one pass over the data
   (paid every epoch, measured by reading the pipeline alone, an upper
   bound: in training the reading overlaps the steps). Each as a
   fraction of one training epoch of a small backbone (ResNet-8 x 0.25,
   the epoch time from 30 timed steps).
2. Peak memory of ``evaluate(test, calibration_data=validation)`` on two
   untrained modes, before (the code in ``--before``, a checkout that
   loads the sets into arrays) and after (this checkout, streamed): the
   peak of Python/NumPy allocations (tracemalloc) and the growth of the
   resident set (``ru_maxrss``) during the call, each in a fresh process.

Usage: python benchmarks/data_checks.py [--before /work/main]
(about 3 minutes on 2 CPU cores).
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MEMORY = textwrap.dedent(
    """
    import json, os, resource, tracemalloc
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras, keras_bridge as kb

    data = kb.data.load_fashion_mnist()
    backbone = kb.models.resnet((28, 28, 1), 10, depth=8, width=0.25)
    ens = kb.BridgeEnsemble(backbone, seed=0)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    ens.predict(data.validation.take(1), verbose=0)  # build, trace
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    ens.evaluate(data.test, calibration_data=data.validation)
    peak = tracemalloc.get_traced_memory()[1]
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss
    print(json.dumps({"tracemalloc_mb": peak / 2**20,
                      "rss_growth_mb": grown / 2**10,
                      "module": kb.__file__}))
    """
)


def _seconds(fn, *args, runs=3) -> float:
    """Best of ``runs`` of ``fn(*args)`` (the machine is shared: the
    least disturbed run)."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - start)
    return best


def _epoch_seconds(kb, data) -> float:
    """One training epoch of a small backbone, from 30 timed steps."""
    model = kb.models.resnet((28, 28, 1), 10, depth=8, width=0.25)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.train.take(3), epochs=1, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(data.train.take(30), epochs=1, verbose=0)
    step = (time.perf_counter() - start) / 30
    return step * int(data.train.cardinality())


def check_costs() -> list:
    import keras_bridge as kb
    from keras_bridge import data_checks

    data = kb.data.load_fashion_mnist()
    epoch = _epoch_seconds(kb, data)
    rows = []
    for name in ("train", "validation", "test"):
        ds = getattr(data, name)
        args = (name, (28, 28, 1), 10, "benchmark")
        plain = data_checks.dataset(ds, *args[:3])

        def read(dataset):
            dataset.reduce(0, lambda count, _: count + 1)

        row = {
            "data": name,
            "batches": int(ds.cardinality()),
            "epoch_s": epoch,
        }
        for mode in ("full", "in_pipeline"):
            data_checks.set_data_checks(mode)
            row[f"{mode}_s"] = _seconds(data_checks.checked, ds, *args)
        data_checks.set_data_checks("auto")
        checked = data_checks.in_pipeline(plain, *args)
        row["read_s"] = _seconds(read, plain)
        row["asserts_s"] = max(0.0, _seconds(read, checked) - row["read_s"])
        row["auto"] = (
            "full"
            if row["batches"] <= data_checks.FULL_CHECK_MAX_BATCHES
            else "in_pipeline"
        )
        rows.append(row)
    return rows


def memory(path) -> dict:
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", MEMORY],
        env=env,
        cwd=path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--before",
        default=None,
        help="a checkout of keras-bridge before streamed evaluation",
    )
    args = parser.parse_args()
    rows = check_costs()
    print(
        "| data | batches | full check s (x epoch) | in-pipeline: first "
        "batch s + asserts s/epoch (x epoch) | auto |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        full = r["full_s"]
        first, asserts = r["in_pipeline_s"], r["asserts_s"]
        print(
            f"| {r['data']} | {r['batches']} | {full:.2f} "
            f"({full / r['epoch_s']:.1%}) | {first:.2f} + {asserts:.2f} "
            f"({(first + asserts) / r['epoch_s']:.1%}) | {r['auto']} |"
        )
    print(
        f"\nOne training epoch (ResNet-8 x 0.25, 430 batches of 128): "
        f"{rows[0]['epoch_s']:.1f} s; plain reading of each set: "
        + ", ".join(f"{r['data']} {r['read_s']:.2f} s" for r in rows)
    )
    found = {"after": memory(ROOT)}
    if args.before:
        found["before"] = memory(args.before)
    print(
        "\n| evaluate(test, calibration_data=validation) | tracemalloc "
        "peak MB | RSS growth MB |"
    )
    print("|---|---|---|")
    for name, m in found.items():
        print(
            f"| {name} ({m['module']}) | {m['tracemalloc_mb']:.1f} | "
            f"{m['rss_growth_mb']:.1f} |"
        )


if __name__ == "__main__":
    main()
