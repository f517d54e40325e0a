"""Train two modes on the bundled digits data and connect them by a curve.

Prints the accuracy and NLL along the straight line between the two modes
(the loss barrier), then fits a quadratic Bezier curve between them and
prints the same profile along the curve (no barrier), and the midpoint
check: the validation accuracy of the curve's ends and midpoint. Both
profiles are drawn to ``curve.png``.

Run (from the repository root):

    python examples/curves_on_digits.py            # the full run
    python examples/curves_on_digits.py --smoke    # tiny: only checks it runs

Outputs, under ``--output`` (default ``runs/examples/curves_on_digits``; a
folder that holds an earlier run is kept and ``<output>-2``, ``-3``, ...
is used instead): ``curve.png`` and ``profiles.json``.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras_bridge as kb  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Connect two digits modes by a low-loss curve."
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=15,
        help="epochs per mode; the curve trains as long",
    )
    parser.add_argument(
        "--num-points", type=int, default=5, help="points of each profile"
    )
    parser.add_argument(
        "--output",
        default=os.path.join("runs", "examples", "curves_on_digits"),
        help="output folder; when it holds an earlier run, <output>-2, "
        "-3, ... is used instead",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="1 epoch per stage and 3 points: only checks the script runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.num_points = 1, 3
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    output = kb.atomic_files.run_folder(args.output)
    print(f"Writing to {output}")
    data = kb.data.load_digits()
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(data.train, epochs=args.epochs, verbose=0)
    line = ens.curve_profile(
        data.test, num_points=args.num_points, bn_data=data.train
    )
    print(line)
    ens.fit_curves(data.train, validation_data=data.validation, verbose=0)
    curve = ens.curve_profile(
        data.test, num_points=args.num_points, bn_data=data.train
    )
    print(curve)
    print("midpoint check (validation accuracy):", ens.curve_checks[(0, 1)])
    line.plot(path=os.path.join(output, "curve.png"), others=[curve])
    with open(os.path.join(output, "profiles.json"), "w") as handle:
        json.dump([line.to_dict(), curve.to_dict()], handle, indent=2)


if __name__ == "__main__":
    main()
