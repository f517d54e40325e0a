"""Benchmark: the whole pipeline on Fashion-MNIST, with documented defaults.

Trains 5 modes (the anchor is the best on validation NLL), curves from the
anchor to every other mode (plus the curve 0 -> 1 for the Type II bridge
of DE-2 when the anchor is neither), Type I bridges on the anchor's curves
and a Type II bridge on 0 -> 1, all with `BridgeEnsemble`'s defaults; then
prints the report, bootstrap 95 % intervals (over the 10,000 test images)
of the headline rows, per-stage training wall time (and the total relative
to training DE-5, i.e. the modes alone), and CPU latency at batch 256
relative to one backbone (median of interleaved runs in one process). The
trained ensemble is saved to ``--output`` for later evaluation.

Needs the Debian package ``dataset-fashion-mnist``.

Goals (issue #8): Single + 4 Type I: DEE (cNLL) >= 2.0 at <= 1.5x FLOPs and
<= 1.6x latency, every bridge >= 95 % agreement; DE-2 + Type II reaches
DE-3's cNLL at <= 2.4x FLOPs.

Usage: python benchmarks/fashion_mnist.py --backbone resnet|cnn|mobilenet
       python benchmarks/fashion_mnist.py --reuse ENSEMBLE.keras \\
           [--head '{"base_logits": 0.5}' --tag half]
(``--reuse`` keeps a saved ensemble's modes and curves and refits only its
bridges: the same teachers, for comparing bridge recipes.)
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from timing import interleaved_medians  # noqa: E402

import keras_bridge as kb  # noqa: E402

BACKBONES = {
    "resnet": lambda shape: kb.models.resnet(shape, 10, depth=8, width=0.5),
    "cnn": lambda shape: kb.models.plain_cnn(shape, 10, width=0.25),
    "mobilenet": lambda shape: kb.models.mobilenet_v3_style(
        shape, 10, width=0.5
    ),
}


def train(ens, data, args):
    stages = {}

    def timed(name, fn):
        start = time.perf_counter()
        fn()
        stages[name] = time.perf_counter() - start
        print(f"{name}: {stages[name]:.0f} s", flush=True)

    if args.reuse:
        print(f"modes and curves: reused from {args.reuse}", flush=True)
    else:
        fit_modes_and_curves(ens, data, args, timed)
    print(f"anchor: mode {ens.anchor}", flush=True)
    if args.head is not None:
        print(f"bridge heads: fit_bridge(head={args.head})", flush=True)
    pairs = sorted(ens.curves)
    type2 = (0, 1) if (0, 1) in pairs else (1, 0)
    anchor_pairs = [p for p in pairs if p[0] == ens.anchor]
    timed(
        "type1 bridges",
        lambda: ens.fit_bridge(
            data.train,
            pairs=anchor_pairs,
            validation_data=data.validation,
            head=args.head,
            verbose=args.verbose,
        ),
    )
    timed(
        "type2 bridge",
        lambda: ens.fit_bridge(
            data.train,
            kind="type2",
            pairs=[type2],
            validation_data=data.validation,
            head=args.head,
            verbose=args.verbose,
        ),
    )
    return stages


def fit_modes_and_curves(ens, data, args, timed):
    timed(
        "modes",
        lambda: ens.fit_modes(
            data.train,
            epochs=args.epochs,
            validation_data=data.validation,
            verbose=args.verbose,
        ),
    )
    pairs = ens._pairs(None)
    type2 = (0, 1) if (0, 1) in pairs or ens.anchor > 1 else (1, 0)
    if type2 not in pairs:
        pairs.append(type2)
    timed(
        "curves",
        lambda: ens.fit_curves(
            data.train,
            pairs=pairs,
            validation_data=data.validation,
            verbose=args.verbose,
        ),
    )
    print("midpoint checks:", ens.curve_checks, flush=True)


def arrays(data):
    """The validation and test splits as ((x_val, y_val), (x, y)) arrays,
    read once for every configuration `per_image` evaluates."""
    return kb.data.to_numpy(data.validation), kb.data.to_numpy(data.test)


def per_image(ens, splits, members):
    """Per test image: whether ``members``' calibrated prediction is right,
    and its calibrated NLL (temperature fitted on validation); ``splits``
    from `arrays`."""
    (x_val, y_val), (x, y) = splits
    model = ens.inference_model(members, temperature=1.0)
    val = model.predict(x_val, verbose=0)["probabilities"]
    t = kb.metrics.fit_temperature(val, y_val)
    test = kb.metrics.temperature_scale(
        model.predict(x, verbose=0)["probabilities"], t
    )
    correct = (test.argmax(1) == y).astype("float64")
    nll = -np.log(np.clip(test[np.arange(len(y)), y], 1e-12, 1))
    return correct, nll


def bootstrap(ens, data, configs, draws, seed=0):
    """95 % intervals of accuracy and calibrated NLL over test images."""
    splits = arrays(data)
    count = len(splits[1][1])
    samples = np.random.default_rng(seed).integers(0, count, (draws, count))
    lines = [
        "| configuration | accuracy (95 % CI) | cNLL (95 % CI) |",
        "|---|---|---|",
    ]
    for name, members in configs.items():
        correct, nll = per_image(ens, splits, members)
        acc = [correct[s].mean() for s in samples]
        cnll = [nll[s].mean() for s in samples]
        lines.append(
            f"| {name} | {correct.mean():.4f} ({np.percentile(acc, 2.5):.4f}"
            f"-{np.percentile(acc, 97.5):.4f}) | {nll.mean():.4f} "
            f"({np.percentile(cnll, 2.5):.4f}-{np.percentile(cnll, 97.5):.4f})"
            " |"
        )
    return "\n".join(lines)


def configurations(ens):
    names = ens.member_names()
    single = [f"mode_{ens.anchor}"]
    type1 = [n for n in names if n.startswith(f"type1_{ens.anchor}-")]
    type2 = [n for n in names if n.startswith("type2")]
    modes = [f"mode_{i}" for i in range(len(ens.modes))]
    return {
        "Single (anchor)": single,
        f"Single + {len(type1)} Type I": single + type1,
        "DE-2": modes[:2],
        f"DE-2 + {len(type2)} Type II": modes[:2] + type2,
        "DE-3": modes[:3],
        f"DE-{len(modes)}": modes,
    }


def latency(ens, data, configs, runs):
    x, _ = kb.data.to_numpy(data.test)
    x = x[:256]
    backbone = ens.modes[0]
    fns = {"backbone": lambda: backbone.predict_on_batch(x)}
    for name, members in configs.items():
        model = ens.inference_model(members)
        fns[name] = lambda model=model: model.predict_on_batch(x)
    times = interleaved_medians(fns, runs)
    lines = [
        "| configuration | ms (batch 256) | vs one backbone |",
        "|---|---|---|",
    ]
    for name, median in times.items():
        lines.append(
            f"| {name} | {1e3 * median:.1f} | "
            f"{median / times['backbone']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backbone", choices=sorted(BACKBONES), default="resnet"
    )
    parser.add_argument("--num-modes", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-runs", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--output", default="runs/benchmarks")
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument(
        "--reuse",
        metavar="ENSEMBLE",
        help="a .keras ensemble this script saved: keep its modes and "
        "curves and refit only the bridges (to compare bridge recipes)",
    )
    parser.add_argument(
        "--head",
        type=json.loads,
        metavar="JSON",
        help="`fit_bridge(head=...)` as JSON, e.g. '{\"base_logits\": 0.5}' "
        "(default: fit_bridge's own): to compare a head option with the "
        "defaults; the goals hold for the defaults only",
    )
    parser.add_argument(
        "--tag",
        default="rebridged",
        help="suffix of the saved ensemble's name with --reuse",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few batches of each split, to check the script runs",
    )
    args = parser.parse_args(argv)

    data = kb.data.load_fashion_mnist(
        batch_size=args.batch_size, seed=args.seed
    )
    if args.smoke:
        data = kb.data.DataSplits(
            data.train.take(4),
            data.validation.take(2),
            data.test.take(2),
            data.input_shape,
            data.num_classes,
        )
    if args.reuse:
        ens = kb.BridgeEnsemble.load(args.reuse)
        backbone = ens.backbone
    else:
        backbone = BACKBONES[args.backbone](data.input_shape)
        ens = kb.BridgeEnsemble(
            backbone, num_modes=args.num_modes, seed=args.seed
        )
    print(
        f"{backbone.name}: {kb.flops(backbone)} FLOPs, feature layer "
        f"{ens.feature_layer}",
        flush=True,
    )
    stages = train(ens, data, args)
    os.makedirs(args.output, exist_ok=True)
    name = f"fashion_mnist_{args.backbone}"
    if args.reuse:
        stem = os.path.splitext(os.path.basename(args.reuse))[0]
        name = f"{stem}_{args.tag}"
    path = os.path.join(args.output, f"{name}.keras")
    ens.save(path)
    report = ens.evaluate(data.test, calibration_data=data.validation)
    print("\n## Report\n")
    print(report)
    with open(path.replace(".keras", "_report.json"), "w") as handle:
        json.dump(report.to_dict(), handle, indent=1, default=float)
    configs = configurations(ens)
    print(f"\n## Bootstrap ({args.bootstrap} draws of the test set)\n")
    print(bootstrap(ens, data, configs, args.bootstrap))
    print("\n## Training wall time\n")
    total = sum(stages.values())
    for name, seconds in stages.items():
        print(f"- {name}: {seconds:.0f} s")
    if "modes" in stages:
        print(
            f"- total {total:.0f} s = {total / stages['modes']:.2f}x the "
            f"training time of DE-{args.num_modes} (the modes alone)"
        )
    print(
        f"\n## CPU latency ({os.cpu_count()} cores, median of "
        f"{args.latency_runs} interleaved runs)\n"
    )
    print(latency(ens, data, configs, args.latency_runs))


if __name__ == "__main__":
    main()
