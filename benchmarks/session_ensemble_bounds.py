"""Benchmark: the quality bounds of the test suite's trained ensemble.

``tests/conftest.py`` trains one ensemble per test run (ResNet-8 x 0.5 on
digits: 2 modes, their curve, a Type I, a Type II and a t-conditioned
bridge), and `test_ensemble.py` and `test_bridges.py` bound its quality;
`test_shared_trunk.py` fits a shared trunk on its curve and bounds that.
A bound must hold for any seed, not for the one the suite uses: this
trains the same ensemble with the same epochs for several seeds and
prints, per seed, each quantity those tests bound (the test comments
quote the ranges) and each stage's seconds.

Usage:

    python benchmarks/session_ensemble_bounds.py --seeds 0 1 2

The log of the run that set the suite's epochs is
``benchmarks/logs/session_ensemble_bounds.log``.
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_bridge as kb  # noqa: E402


def measure(seed, epochs, family):
    digits = kb.data.load_digits(batch_size=64)
    x, y = kb.data.to_numpy(digits.test)
    seconds = {}
    start = time.perf_counter()

    def timed(name, call, *args, **kwargs):
        start = time.perf_counter()
        result = call(*args, verbose=0, **kwargs)
        seconds[name] = round(time.perf_counter() - start, 1)
        return result

    if family == "resnet":
        backbone = kb.models.resnet(
            digits.input_shape, digits.num_classes, depth=8, width=0.5
        )
    else:
        backbone = kb.models.plain_cnn(
            digits.input_shape, digits.num_classes, width=0.5
        )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=seed)
    timed("modes", ens.fit_modes, digits.train, epochs=epochs["modes"])
    line = ens.curve_profile(
        digits.test, num_points=3, bn_data=digits.train, verbose=0
    )
    timed(
        "curves",
        ens.fit_curves,
        digits.train,
        validation_data=digits.validation,
    )
    curves = os.path.join(tempfile.mkdtemp(), "curves.keras")
    ens.save(curves)
    for name, options in (
        ("type1", {"kind": "type1"}),
        ("type2", {"kind": "type2"}),
        ("t_any", {"t": "any"}),
    ):
        timed(
            name, ens.fit_bridge, digits.train, epochs=epochs[name], **options
        )

    def accuracy(model):
        probabilities = keras.ops.softmax(model.predict(x, verbose=0))
        return float(kb.metrics.accuracy(probabilities, y))

    endpoints = [accuracy(mode) for mode in ens.modes]
    midpoint = ens.point_model((0, 1), 0.5)
    teacher = midpoint.predict(x, verbose=0).argmax(1)
    members = ens.predict(x, verbose=0)["member_probabilities"]
    profile = ens.curve_profile(digits.test, num_points=3, verbose=0)
    # test_shared_trunk's fixture: a shared trunk on the curve alone.
    shared = kb.BridgeEnsemble.load(curves)
    timed(
        "shared",
        shared.fit_bridge,
        digits.train,
        trunk="shared",
        epochs=epochs["shared"],
    )
    shared_members = np.asarray(
        shared.inference_model()(x)["member_probabilities"]
    )
    anchor = np.argmax(shared.modes[0](x, training=False), 1)
    columns = range(2, members.shape[1])  # the three bridges
    seconds["all"] = round(time.perf_counter() - start, 1)
    return {
        "seed": seed,
        "seconds": seconds,
        "mode_accuracy": endpoints,
        "line_midpoint_nll_rise": float(
            line.nll[1] - max(line.nll[0], line.nll[2])
        ),
        "line_barrier": float(line.barrier),
        "midpoint_minus_mean_accuracy": accuracy(midpoint)
        - float(np.mean(endpoints)),
        "validation_gap": float(ens.curve_checks[(0, 1)]["gap"]),
        "curve_barrier": float(profile.barrier),
        "bridge_agreement": [
            float((members[:, c].argmax(1) == teacher).mean()) for c in columns
        ],
        "bridge_accuracy": [
            float((members[:, c].argmax(1) == y).mean()) for c in columns
        ],
        "shared_network_agreement_with_anchor": float(
            (shared_members[:, 2].argmax(1) == anchor).mean()
        ),
        "shared_head_agreement": float(
            (shared_members[:, 3].argmax(1) == teacher).mean()
        ),
        "shared_head_accuracy": float(
            (shared_members[:, 3].argmax(1) == y).mean()
        ),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--family", choices=["resnet", "plain_cnn"], default="resnet"
    )
    parser.add_argument("--modes", type=int, default=8)
    parser.add_argument("--type1", type=int, default=20)
    parser.add_argument("--type2", type=int, default=10)
    parser.add_argument("--t-any", type=int, default=10)
    parser.add_argument("--shared", type=int, default=5)
    args = parser.parse_args()
    epochs = {
        "modes": args.modes, "type1": args.type1, "type2": args.type2,
        "t_any": args.t_any, "shared": args.shared,
    }  # fmt: skip
    print("epochs", json.dumps(epochs))
    for seed in args.seeds:
        print(json.dumps(measure(seed, epochs, args.family)), flush=True)


if __name__ == "__main__":
    main()
