"""Benchmark: does tuning the bridge head pay off? (digits)

For each seed: trains 3 modes and their curves, then on the anchor's
first curve (r = 0.5) trains the default Type I head (`fit_bridge` with
its documented defaults: 60 epochs, early stopping on ``val_kl`` with
patience 10) and a head found by `tune_bridge` (Hyperband over the head
family and width, learning rate and mixup, same FLOPs budget, trials of
up to 60 epochs). Both are scored on the validation data (the tuner's
objective, so biased in its favour) and on the held-out test data:
KL to the teacher, top-1 agreement, FLOPs, and the calibrated NLL of
Single + 1 Type I; plus the wall time of each.

Usage: python benchmarks/tuning.py [--seeds 0 1 2] [--max-trials 10]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_bridge as kb  # noqa: E402
from keras_bridge.distillation import teacher_fidelity  # noqa: E402
from keras_bridge.graph import feature_model  # noqa: E402


def fidelity(ens, member, x):
    """KL and agreement of the installed head with its teacher on x."""
    teacher = ens.curve_points[(member.pair, member.point)]
    head = ens.bridges[member]
    network = ens.shared if member.shared else ens.modes[member.sources[0]]
    trunk = feature_model(network, ens.feature_index, head.base_logits)
    if head.base_logits:
        features, logits = trunk.predict(x, verbose=0)
        student = head(features, logits=logits, training=False)
    else:
        student = head(trunk.predict(x, verbose=0), training=False)
    return teacher_fidelity(teacher.predict(x, verbose=0), student)


def score(ens, member, data, seconds):
    x_val, _ = kb.data.to_numpy(data.validation)
    x_test, _ = kb.data.to_numpy(data.test)
    report = ens.evaluate(data.test, calibration_data=data.validation)
    row = report.row("Single + 1 Type I")
    test = fidelity(ens, member, x_test)
    val = fidelity(ens, member, x_val)
    return {
        "val_kl": val["kl"],
        "val_agree": val["agreement"],
        "test_kl": test["kl"],
        "test_agree": test["agreement"],
        "flops": row["flops"] - 1.0,
        "cnll": row["cnll"],
        "single_cnll": report.row(f"mode {ens.anchor}")["cnll"],
        "seconds": seconds,
    }


def run_seed(seed, args):
    data = kb.data.load_digits(batch_size=64, seed=seed)
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=3, seed=seed)
    ens.fit_modes(data.train, epochs=20, validation_data=data.validation,
                  verbose=0)  # fmt: skip
    ens.fit_curves(data.train, validation_data=data.validation, verbose=0)
    pair = ens.default_pair()
    member = kb.members.BridgeMember("type1", pair, 0.5)
    start = time.perf_counter()
    ens.fit_bridge(
        data.train, pairs=[pair], epochs=60, validation_data=data.validation,
        callbacks=[keras.callbacks.EarlyStopping(
            monitor="val_kl", mode="min", patience=10,
            restore_best_weights=True)],
        verbose=0,
    )  # fmt: skip
    default = score(ens, member, data, time.perf_counter() - start)
    start = time.perf_counter()
    result = ens.tune_bridge(
        data.train, data.validation, tuner="hyperband",
        max_trials=args.max_trials, epochs=60, verbose=0,
    )  # fmt: skip
    tuned = score(ens, member, data, time.perf_counter() - start)
    tuned["best"] = result.best["hyperparameters"]
    tuned["trials"] = len(result.completed)
    return default, tuned


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-trials", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        default, tuned = run_seed(seed, args)
        print(f"seed {seed}: default {default}\n        tuned   {tuned}",
              flush=True)  # fmt: skip
        rows.append((default, tuned))
    keys = ("val_kl", "val_agree", "test_kl", "test_agree", "flops", "cnll",
            "seconds")  # fmt: skip
    print(f"\n{len(rows)} seeds, mean +- std (single model cNLL "
          f"{np.mean([r[0]['single_cnll'] for r in rows]):.4f})")  # fmt: skip
    print(f"{'head':>8} " + " ".join(f"{k:>16}" for k in keys))
    for index, name in enumerate(("default", "tuned")):
        cells = []
        for key in keys:
            values = [r[index][key] for r in rows]
            cells.append(f"{np.mean(values):9.4f} +-{np.std(values):6.4f}")
        print(f"{name:>8} " + " ".join(f"{c:>16}" for c in cells))
    wins = sum(r[1]["test_kl"] < r[0]["test_kl"] for r in rows)
    print(f"tuned head has the lower test KL on {wins} of {len(rows)} seeds")


if __name__ == "__main__":
    main()
