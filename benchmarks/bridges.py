"""Benchmark: bridge ensembles on the bundled digits data.

For several seeds: trains M modes, curves from mode 0 to every other mode,
Type I bridges on those curves and Type II bridges on the curve 0 -> 1,
then prints the evaluation report's mean and spread over seeds, each
bridge's fidelity, and the CPU latency of each configuration's inference
model at batch 256 relative to one backbone (median of interleaved runs in
one process).

Goals: Single + 4 Type I bridges reach DEE (calibrated NLL) >= 2.0 at
<= 1.5x the FLOPs and <= 1.6x the latency of one backbone; DE-2 + Type II
bridges reach DE-3's calibrated NLL at <= 2.4x FLOPs; every bridge agrees
with its teacher's top-1 class on >= 95 % of test inputs.

Usage: python benchmarks/bridges.py [--seeds 0 1 2] [--head JSON]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from timing import interleaved_medians  # noqa: E402

import keras_bridge as kb  # noqa: E402

SHOWN = (
    "flops",
    "accuracy",
    "nll",
    "cnll",
    "cece",
    "cbrier",
    "dee_cnll",
    "agreement",
)


def run_seed(seed, args):
    data = kb.data.load_digits(batch_size=64, seed=seed)
    backbone = kb.models.resnet(
        data.input_shape,
        data.num_classes,
        depth=args.depth,
        width=args.width,
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=args.num_modes, seed=seed)
    start = time.perf_counter()
    ens.fit_modes(data.train, epochs=args.epochs, verbose=0)
    ens.fit_curves(data.train, validation_data=data.validation, verbose=0)
    ens.fit_bridge(
        data.train,
        kind="type1",
        epochs=args.bridge_epochs,
        head=args.head,
        verbose=0,
    )
    ens.fit_bridge(
        data.train,
        kind="type2",
        pairs=[(0, 1)],
        t=(0.25, 0.5, 0.75),
        epochs=args.bridge_epochs,
        head=args.head,
        verbose=0,
    )
    # One r-conditioned head per curve, to compare with the fixed-r heads.
    ens.fit_bridge(
        data.train,
        kind="type1",
        t="any",
        epochs=args.bridge_epochs,
        head=args.head,
        verbose=0,
    )
    trained = time.perf_counter() - start
    report = ens.evaluate(data.test, calibration_data=data.validation)
    print(f"seed {seed}: trained in {trained:.0f} s")
    print(report)
    return ens, report, data


def summarise(reports):
    names = [row["name"] for row in reports[0].rows]
    header = ["configuration"] + [f"{k}" for k in SHOWN]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in names:
        cells = [name]
        for key in SHOWN:
            values = [r.row(name).get(key) for r in reports]
            if any(v is None for v in values):
                cells.append("-")
                continue
            cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bridge_summary(reports):
    lines = [
        "| bridge | r | agreement (min over seeds) | mean | KL | FLOPs |",
        "|---|---|---|---|---|---|",
    ]
    for key in [(b["name"], b["point"]) for b in reports[0].bridges]:
        rows = [
            b
            for r in reports
            for b in r.bridges
            if (b["name"], b["point"]) == key
        ]
        agree = [b["agreement"] for b in rows]
        lines.append(
            f"| {key[0]} | {key[1]:g} | {min(agree):.4f} | "
            f"{np.mean(agree):.4f} | "
            f"{np.mean([b['kl'] for b in rows]):.4f} | "
            f"{np.mean([b['flops'] for b in rows]):.3f}x |"
        )
    return "\n".join(lines)


def latency(ens, data, runs):
    x, _ = kb.data.to_numpy(data.test)
    x = np.resize(x, (256, *x.shape[1:]))
    type1 = [
        n
        for n in ens.member_names()
        if n.startswith("type1") and not n.endswith("rany")
    ]
    type2 = [n for n in ens.member_names() if n.startswith("type2")]
    modes = [f"mode_{i}" for i in range(len(ens.modes))]
    configs = {
        "Single": modes[:1],
        f"Single + {len(type1)} Type I": modes[:1] + type1,
        "DE-2": modes[:2],
        f"DE-2 + {len(type2)} Type II": modes[:2] + type2,
        "DE-3": modes[:3],
        f"DE-{len(modes)}": modes,
    }
    models = {name: ens.inference_model(m) for name, m in configs.items()}
    backbone = ens.modes[0]
    fns = {"backbone": lambda: backbone.predict_on_batch(x)}
    for name, model in models.items():
        fns[name] = lambda model=model: model.predict_on_batch(x)
    times = interleaved_medians(fns, runs)
    base = times["backbone"]
    lines = [
        "| configuration | latency (ms, batch 256) | vs one backbone |",
        "|---|---|---|",
    ]
    for name in fns:
        median = times[name]
        lines.append(f"| {name} | {1e3 * median:.2f} | {median / base:.2f}x |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-modes", type=int, default=5)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--bridge-epochs", type=int, default=60)
    parser.add_argument("--latency-runs", type=int, default=30)
    parser.add_argument(
        "--head",
        type=json.loads,
        metavar="JSON",
        help="`fit_bridge(head=...)` as JSON, e.g. "
        "'{\"base_logits\": 0.5}' (default: fit_bridge's own)",
    )
    args = parser.parse_args(argv)

    results = [run_seed(seed, args) for seed in args.seeds]
    reports = [report for _, report, _ in results]
    print(f"\n## Report: mean ± std over seeds {args.seeds}\n")
    print(summarise(reports))
    print("\n## Bridges\n")
    print(bridge_summary(reports))
    ens, _, data = results[-1]
    print(
        f"\n## CPU latency ({os.cpu_count()} cores, median of "
        f"{args.latency_runs} interleaved runs)\n"
    )
    print(latency(ens, data, args.latency_runs))


if __name__ == "__main__":
    main()
