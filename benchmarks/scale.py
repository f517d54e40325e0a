"""Benchmark: distribution, memory and on-device export, as ratios.

1. `tf.distribute.MirroredStrategy` over 2 logical CPU devices against
   one device: the median step time of each stage (modes, curves,
   bridges) of a digits ensemble (ResNet-8 x 0.5, global batch 64). The
   two logical devices share the same 2 physical cores, so this measures
   the overhead of replication, not a speed-up: the figure to expect on
   real accelerators is one device's step time at the per-replica batch.
2. Peak resident memory (``ru_maxrss``) of a process that runs
   `fit_bridge` on a saved ensemble against one that runs a plain
   `model.fit` of the backbone on the same data, for the ResNet on digits
   and for `keras.applications.EfficientNetB0` at 32x32x3 (``weights=None``,
   512 random images; untrained modes are enough for memory). Goal: <=
   1.5x.
3. TFLite: see ``benchmarks/tflite.py`` (latency and size against the
   SavedModel at batch 1); its table is printed here when
   ``--with-tflite`` is given.
4. Units on a cluster (``--units``, alone): the training stages of the
   ``keras-bridge run`` pipeline on digits and on Fashion-MNIST (presets
   in `UNIT_PRESETS`), once in one process and once on a local Ray
   cluster (``ray.init(num_cpus=2)`` on 127.0.0.1). From the first run's
   measured units (each mode, each curve, each stage's bridges, data and
   start-up included) and its driver time (the rest: loading the units,
   BatchNorm recalibration, curve profiles, saving), the wall time on 1,
   2, 5 and 10 machines of one unit each is computed: the units of a wave
   (modes; curves; both bridge stages) are scheduled longest first on the
   machines, the waves one after another, plus the driver; the critical
   path is the same with a machine per unit. Beside it: the measured wall
   time of both runs on this machine, and whether their ensembles are
   bit for bit the same.

Every measurement runs in a fresh process (devices and peak memory are
per process). Usage: python benchmarks/scale.py [--with-tflite];
python benchmarks/scale.py --units [--datasets digits fashion_mnist]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

STEPS = textwrap.dedent(
    """
    import json, os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, keras_bridge as kb

    class Steps(keras.callbacks.Callback):
        def __init__(self): self.times = []
        def on_train_batch_begin(self, b, logs=None):
            self.start = time.perf_counter()
        def on_train_batch_end(self, b, logs=None):
            self.times.append(time.perf_counter() - self.start)

    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
                if sys.argv[1] == "mirrored" else None)
    data = kb.data.load_digits(batch_size=64)
    backbone = kb.models.resnet(data.input_shape, 10, depth=8, width=0.5)
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0,
                            strategy=strategy)
    result = {}
    for stage, call in (
        ("modes", lambda cb: ens.fit_modes(data.train, epochs=3,
                                           callbacks=cb, verbose=0)),
        ("curves", lambda cb: ens.fit_curves(data.train, epochs=3,
                                             callbacks=cb, verbose=0)),
        ("bridges", lambda cb: ens.fit_bridge(data.train, epochs=3,
                                              callbacks=cb, verbose=0)),
    ):
        steps = Steps()
        call([steps])
        # The first epoch traces the graph: steady-state steps only.
        result[stage] = float(np.median(steps.times[len(steps.times) // 3:]))
    print(json.dumps(result))
    """
)

MEMORY = textwrap.dedent(
    """
    import json, os, resource, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf, keras, keras_bridge as kb

    what, net, path = sys.argv[1], sys.argv[2], sys.argv[3]
    if net == "resnet":
        data = kb.data.load_digits(batch_size=64)
        train = data.train
        backbone = kb.models.resnet(data.input_shape, 10, depth=8, width=0.5)
    else:
        rng = np.random.default_rng(0)
        x = rng.uniform(size=(512, 32, 32, 3)).astype("float32")
        y = rng.integers(0, 10, 512)
        train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
        backbone = keras.applications.EfficientNetB0(
            weights=None, input_shape=(32, 32, 3), classes=10,
            classifier_activation=None)
    if what == "prepare":
        ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
        ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
        ens.fit_curves(train, epochs=1, verbose=0)
        ens.save(path)
    elif what == "fit":
        backbone.compile(
            optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(
                from_logits=True))
        backbone.fit(train, epochs=2, verbose=0)
    else:
        ens = kb.BridgeEnsemble.load(path)
        ens.fit_bridge(train, epochs=2, verbose=0)
    print(json.dumps(
        {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


UNITS = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import keras_bridge as kb
    from keras_bridge import pipeline

    config = kb.config.parse(json.loads(sys.argv[1]))
    folder, where = sys.argv[2], sys.argv[3]
    cluster = None
    if where == "ray":
        # On the loopback address (Ray 2.60 resolves 127.0.0.1 to the
        # machine's own address otherwise).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        cluster = "local"
    started = time.perf_counter()
    ens, data, report, log = pipeline.train(config, folder, 0, None, cluster)
    wall = time.perf_counter() - started
    models = [*ens.modes, *ens.curves.values(), *ens.bridges.values()]
    digest = hashlib.sha256()
    for model in models:
        for weight in model.get_weights():
            digest.update(np.ascontiguousarray(weight).tobytes())
    print(json.dumps({"wall": wall, "stages": log.seconds,
                      "units": report["units"],
                      "weights": digest.hexdigest()}))
    """
)

#: The pipelines `--units` measures: five modes each, so that waves have
#: more units than two machines; Fashion-MNIST shortened to fit a 2-core
#: machine (a plain CNN at width 0.25, one epoch per stage).
UNIT_PRESETS = {
    "digits": {
        "modes": {"num_modes": 5, "epochs": 10},
        "curves": {"epochs": 10, "num_points": 5},
        "bridges": {"epochs": 20},
    },
    "fashion_mnist": {
        "data": {"name": "fashion_mnist", "batch_size": 128},
        "backbone": {"family": "plain_cnn", "width": 0.25},
        "modes": {"num_modes": 5, "epochs": 1},
        "curves": {"epochs": 1, "num_points": 3},
        "bridges": {"epochs": 2},
    },
}
#: Machines the schedule is computed for.
MACHINES = (1, 2, 5, 10)
#: The waves of units: a wave waits for the one before.
WAVES = (("mode_",), ("curve_",), ("type1", "type2"))


def schedule(units, driver, machines) -> float:
    """Wall time of ``units`` (``{"unit", "seconds"}``) on ``machines``
    of one unit each: every wave scheduled longest first, the waves one
    after another, plus the ``driver`` seconds.

    Example:

    >>> units = [{"unit": "mode_0", "seconds": 3.0},
    ...          {"unit": "mode_1", "seconds": 2.0},
    ...          {"unit": "curve_0_1", "seconds": 1.0}]
    >>> schedule(units, 0.5, 1), schedule(units, 0.5, 2)
    (6.5, 4.5)
    """
    total = driver
    for prefixes in WAVES:
        times = sorted(
            (u["seconds"] for u in units if u["unit"].startswith(prefixes)),
            reverse=True,
        )
        loads = [0.0] * machines
        for seconds in times:
            loads[loads.index(min(loads))] += seconds
        total += max(loads)
    return total


def units_table(name, here, ray) -> None:
    stages = ("data", "modes", "curves", "type1", "type2")
    driver = sum(here["stages"].get(stage, 0.0) for stage in stages)
    driver -= sum(unit["seconds"] for unit in here["units"])
    print(f"\n{name}: units measured in one process (s)")
    for unit in here["units"]:
        print(f"  {unit['unit']:>14} {unit['seconds']:7.1f}")
    print(f"  {'driver':>14} {driver:7.1f}")
    print("computed wall time (s), one unit per machine at a time:")
    one = schedule(here["units"], driver, 1)
    for machines in MACHINES:
        wall = schedule(here["units"], driver, machines)
        print(f"  {machines:>3} machine(s) {wall:8.1f}  x{one / wall:.2f}")
    path = schedule(here["units"], driver, len(here["units"]))
    print(f"  critical path  {path:8.1f}  x{one / path:.2f}")
    print(
        f"measured on this machine: one process {here['wall']:.1f} s, "
        f"local Ray (2 CPUs) {ray['wall']:.1f} s "
        f"(x{here['wall'] / ray['wall']:.2f}); same ensemble bit for bit: "
        f"{here['weights'] == ray['weights']}"
    )


def _child(source: str, *args) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        result = subprocess.run(
            [sys.executable, f.name, *args], capture_output=True, text=True,
            check=False,
        )  # fmt: skip
    finally:
        os.remove(f.name)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-tflite", action="store_true")
    parser.add_argument("--units", action="store_true")
    parser.add_argument("--datasets", nargs="+", default=list(UNIT_PRESETS))
    args = parser.parse_args()
    if args.units:
        for name in args.datasets:
            preset = {**UNIT_PRESETS[name], "plots": False}
            runs = {}
            with tempfile.TemporaryDirectory() as folder:
                for where in ("here", "ray"):
                    runs[where] = _child(
                        UNITS, json.dumps(preset),
                        os.path.join(folder, where), where,
                    )  # fmt: skip
                    # Each run as it ends: a long benchmark keeps its part.
                    print(name, where, json.dumps(runs[where]), flush=True)
            units_table(name, runs["here"], runs["ray"])
        return

    one = _child(STEPS, "single")
    two = _child(STEPS, "mirrored")
    print("MirroredStrategy (2 logical CPUs) vs one device, median step:")
    print(f"{'stage':>8} {'one (ms)':>9} {'mirrored (ms)':>14} {'ratio':>6}")
    for stage in one:
        print(
            f"{stage:>8} {1e3 * one[stage]:9.1f} {1e3 * two[stage]:14.1f} "
            f"{two[stage] / one[stage]:6.2f}"
        )

    print("\nPeak resident memory: fit_bridge vs model.fit of the backbone")
    header = ("network", "fit (MB)", "fit_bridge (MB)", "ratio")
    print("{:>15} {:>9} {:>16} {:>6}".format(*header))
    with tempfile.TemporaryDirectory() as folder:
        for net in ("resnet", "efficientnetb0"):
            path = os.path.join(folder, f"{net}.keras")
            _child(MEMORY, "prepare", net, path)
            plain = _child(MEMORY, "fit", net, path)["peak_mb"]
            bridge = _child(MEMORY, "bridge", net, path)["peak_mb"]
            ratio = bridge / plain
            print(f"{net:>15} {plain:9.0f} {bridge:16.0f} {ratio:6.2f}")

    if args.with_tflite:
        print()
        subprocess.run(
            [sys.executable, os.path.join(HERE, "tflite.py")], check=True
        )


if __name__ == "__main__":
    main()
