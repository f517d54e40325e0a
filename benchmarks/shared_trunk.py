"""Benchmark: frozen-trunk bridges against a shared trunk, on reused modes.

Trains (or reuses) one ensemble's modes and curves from the anchor to
every other mode, then refits only the Type I bridges once per variant,
each on a fresh copy of the saved ensemble (the same teachers):

- ``frozen``: today's bridges, heads on the anchor's frozen features;
- ``shared``: ``fit_bridge(trunk="shared")``: one trunk, started as the
  anchor's, trained with every head; its own tail distils the anchor;
- ``direct``: the same shared trunk distilling the other modes directly
  (``t=1.0``: the curves' ends), to see what the curves bring;
- ``shared_aug`` / ``frozen_aug``: with random translation (and flips
  where ``--flip``) of the distillation inputs, as the paper's training;
- ``shared_best``: keeping the epoch of the lowest validation KL;
- ``shared_lr2``: the shared trunk at a learning rate of 2e-3 (the
  modes' own) rather than fit_bridge's 6e-3;
- ``shared_corr``: shared-trunk heads that correct the shared network's
  logits (``base_logits``) instead of predicting them from scratch.

With ``--widened-epochs N``, the user's obvious alternative is trained
too: one network of the backbone's family widened until it costs what the
first variant's "+ k" row costs, trained for N epochs, and compared image
by image (paired bootstrap of the cNLL difference) with every variant.

For each it prints the single network (the anchor), the expected DE-k,
the variant's "+ k" row (FLOPs, cNLL, DEE, the share of the curve points'
gain it captures), each head's agreement with its teacher, how often a
head follows its teacher on the test images where the teacher's top
class differs from the anchor's, and a paired bootstrap 95 % interval of
its cNLL minus the single network's over test images.

Usage:
    python benchmarks/shared_trunk.py --data digits --backbone resnet
    python benchmarks/shared_trunk.py --data fashion_mnist --backbone cnn \\
        --ensemble runs/st/fmnist_cnn_s0.keras --variants frozen,shared

The ensemble file is written if missing (modes and curves only).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_bridge as kb  # noqa: E402

BACKBONES = {
    "resnet": lambda data, scale=1.0: kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5 * scale
    ),
    "cnn": lambda data, scale=1.0: kb.models.plain_cnn(
        data.input_shape, data.num_classes, width=0.25 * scale
    ),
}


def augmentation(flip):
    layers = [keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant")]
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    return keras.Sequential(layers, name="distillation_augmentation")


def variants(flip):
    return {
        "frozen": {},
        "shared": {"trunk": "shared"},
        "direct": {"trunk": "shared", "t": 1.0},
        "shared_aug": {"trunk": "shared", "augmentation": augmentation(flip)},
        "frozen_aug": {"augmentation": augmentation(flip)},
        "shared_best": {"trunk": "shared", "keep_best": True},
        "shared_lr2": {"trunk": "shared", "learning_rate": 2e-3},
        "shared_corr": {"trunk": "shared", "head": {"base_logits": True}},
    }


def load_data(name, seed):
    if name == "digits":
        return kb.data.load_digits(seed=seed)
    return kb.data.load_fashion_mnist(seed=seed)


def prepare(path, data, args):
    """The ensemble of ``path``: modes and curves, trained if missing."""
    if os.path.exists(path):
        print(f"modes and curves: reused from {path}", flush=True)
        return
    ens = kb.BridgeEnsemble(
        BACKBONES[args.backbone](data), num_modes=args.num_modes, seed=args.seed
    )
    start = time.perf_counter()
    ens.fit_modes(
        data.train, epochs=args.epochs, validation_data=data.validation,
        verbose=args.verbose,
    )  # fmt: skip
    print(f"modes: {time.perf_counter() - start:.0f} s", flush=True)
    start = time.perf_counter()
    ens.fit_curves(
        data.train, validation_data=data.validation, verbose=args.verbose
    )
    print(f"curves: {time.perf_counter() - start:.0f} s", flush=True)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ens.save(path)


def per_image_nll(ens, members, splits):
    """Calibrated NLL per test image (temperature fitted on validation)."""
    (x_val, y_val), (x, y) = splits
    model = ens.inference_model(members, temperature=1.0)
    t = kb.metrics.fit_temperature(
        model.predict(x_val, verbose=0)["probabilities"], y_val
    )
    probs = kb.metrics.temperature_scale(
        model.predict(x, verbose=0)["probabilities"], t
    )
    return -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0))


def followed(ens, bridge, splits):
    """Of the test images where the teacher's top class differs from the
    anchor's, the fraction on which the bridge picks the teacher's."""
    x = splits[1][0]
    member = kb.members.parse(bridge)
    teacher = ens.point_model(member.pair, member.t).predict(x, verbose=0)
    anchor = ens.modes[member.pair[0]].predict(x, verbose=0)
    head = ens.predict(x, members=[bridge])["probabilities"]
    differs = teacher.argmax(1) != anchor.argmax(1)
    return float(np.mean(head.argmax(1)[differs] == teacher.argmax(1)[differs]))


def run_variant(name, options, path, data, splits, args):
    ens = kb.BridgeEnsemble.load(path)
    pairs = [p for p in sorted(ens.curves) if p[0] == ens.anchor]
    start = time.perf_counter()
    ens.fit_bridge(
        data.train, pairs=pairs, epochs=args.bridge_epochs,
        validation_data=data.validation, verbose=args.verbose, **options,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    report = ens.evaluate(data.test, calibration_data=data.validation)
    k = len(pairs)
    shared = options.get("trunk") == "shared"
    row_name = f"{'Shared trunk' if shared else 'Single'} + {k} Type I"
    row = report.row(row_name)
    single = report.row(f"mode {ens.anchor}")
    bridges = [n for n in ens.member_names() if "type1" in n]
    members = [kb.members.SHARED] if shared else [f"mode_{ens.anchor}"]
    members += bridges
    nll = per_image_nll(ens, members, splits)
    diff = nll - per_image_nll(ens, [f"mode_{ens.anchor}"], splits)
    low, high = paired_interval(diff, args.bootstrap)
    result = {
        "variant": name,
        "row": row_name,
        "seconds": seconds,
        "flops": row["flops"],
        "accuracy": row["accuracy"],
        "cnll": row["cnll"],
        "dee_cnll": row["dee_cnll"],
        "captured": row.get("captured"),
        "single_cnll": single["cnll"],
        "single_accuracy": single["accuracy"],
        "cnll_minus_single": float(diff.mean()),
        "interval": [low, high],
        "agreement": [b["agreement"] for b in report.bridges],
        "followed": [followed(ens, b, splits) for b in bridges],
    }
    if shared:
        result["shared_alone_cnll"] = report.row("Shared trunk")["cnll"]
    print(f"\n## {name}: fit_bridge({options})\n", flush=True)
    print(report)
    print(json.dumps(result, indent=1, default=float), flush=True)
    return result, report, nll


def paired_interval(diff, draws):
    """95 % bootstrap interval of the mean of per-image differences."""
    samples = np.random.default_rng(0).integers(
        0, len(diff), (draws, len(diff))
    )
    means = diff[samples].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def widened(data, splits, target, args, nlls):
    """One network of the backbone's family widened to ``target`` FLOPs
    (relative to the backbone), trained for ``--widened-epochs``."""
    base = kb.flops(BACKBONES[args.backbone](data))
    low, high = 1.0, 3.0
    for _ in range(20):  # bisection on the width multiplier
        scale = (low + high) / 2
        cost = kb.flops(BACKBONES[args.backbone](data, scale)) / base
        low, high = (scale, high) if cost < target else (low, scale)
    model = BACKBONES[args.backbone](data, low)
    cost = kb.flops(model) / base
    ens = kb.BridgeEnsemble(model, num_modes=1, seed=args.seed)
    start = time.perf_counter()
    ens.fit_modes(
        data.train, epochs=args.widened_epochs,
        validation_data=data.validation, verbose=args.verbose,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    report = ens.evaluate(data.test, calibration_data=data.validation)
    row = report.row("mode 0")
    nll = per_image_nll(ens, ["mode_0"], splits)
    print(
        f"\n## Widened single network: width x{low:.3f}, {cost:.2f}x FLOPs, "
        f"{args.widened_epochs} epochs ({seconds:.0f} s): acc "
        f"{row['accuracy']:.4f}, cNLL {row['cnll']:.4f}\n"
    )
    for name, other in nlls.items():
        low_ci, high_ci = paired_interval(other - nll, args.bootstrap)
        print(
            f"- {name} minus widened: {float((other - nll).mean()):+.4f} "
            f"(95 % CI {low_ci:+.4f} to {high_ci:+.4f})"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", choices=("digits", "fashion_mnist"), default="digits"
    )
    parser.add_argument("--backbone", choices=sorted(BACKBONES), default="cnn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-modes", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--bridge-epochs", type=int, default=30)
    parser.add_argument("--variants", default="frozen,shared,direct")
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--ensemble", help="the modes-and-curves file")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--widened-epochs", type=int, default=0)
    parser.add_argument("--output", default="runs/benchmarks")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    data = load_data(args.data, args.seed)
    path = args.ensemble or os.path.join(
        args.output, f"{args.data}_{args.backbone}_s{args.seed}.keras"
    )
    prepare(path, data, args)
    splits = (kb.data.to_numpy(data.validation), kb.data.to_numpy(data.test))
    known = variants(args.flip)
    results, first, nlls = [], None, {}
    for name in args.variants.split(","):
        result, report, nlls[name] = run_variant(
            name, known[name], path, data, splits, args
        )
        results.append(result)
        first = first or report
    print("\n## Reference rows (first variant's report)\n")
    for row in first.rows:
        if row["name"].startswith(("DE-", "Single + ", "mode ")):
            print(
                f"- {row['name']}: acc {row['accuracy']:.4f}, cNLL "
                f"{row['cnll']:.4f}, FLOPs {row['flops']:.2f}x"
            )
    print("\n## Summary\n")
    print(
        "| variant | FLOPs | acc | cNLL (single) | DEE cNLL | captured | "
        "cNLL - single (95 % CI) | head agreement | teacher followed | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        captured = "-" if r["captured"] is None else f"{r['captured']:.0%}"
        print(
            f"| {r['variant']} | {r['flops']:.2f}x | {r['accuracy']:.4f} | "
            f"{r['cnll']:.4f} ({r['single_cnll']:.4f}) | "
            f"{r['dee_cnll']:.2f} | {captured} | "
            f"{r['cnll_minus_single']:+.4f} ({r['interval'][0]:+.4f} to "
            f"{r['interval'][1]:+.4f}) | {min(r['agreement']):.3f}-"
            f"{max(r['agreement']):.3f} | {min(r['followed']):.2f}-"
            f"{max(r['followed']):.2f} | {r['seconds']:.0f} |"
        )
    if args.widened_epochs:
        widened(data, splits, results[0]["flops"], args, nlls)
    stem = os.path.splitext(os.path.basename(path))[0]
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, f"{stem}_shared.json"), "w") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
