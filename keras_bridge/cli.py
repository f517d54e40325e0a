"""The ``keras-bridge`` command."""

import argparse
import json
import math
import os
import sys

from keras_bridge.version import __version__


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}; received {text!r}"
            )
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(
            f"must be a number > 0; received {text!r}"
        )
    return value


def _depth(text: str) -> int:
    value = _count(8)(text)
    if (value - 2) % 6:
        raise argparse.ArgumentTypeError(
            f"must be 6 n + 2 (8, 14, 20, 32, ...); received {text!r}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="keras-bridge",
        description="Cheap deep ensembles: modes, curves and bridges.",
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-bridge {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="train and evaluate an ensemble end to end on a dataset",
        description=(
            "Trains the modes, fits curves between them, trains Type I and "
            "Type II bridges, prints the curve profiles and the ensemble "
            "report, saves the ensemble and exports it for TF Serving and "
            "ONNX, on the bundled digits data by default."
        ),
    )
    run.add_argument(
        "--dataset",
        default="digits",
        help="'digits' (bundled, default) or a prepared TFDS name",
    )
    run.add_argument("--data-dir", default=None, help="TFDS data_dir")
    run.add_argument(
        "--num-modes", type=_count(2), default=3, help="modes to train (>= 2)"
    )
    run.add_argument(
        "--depth", type=_depth, default=8, help="ResNet depth, 6n + 2"
    )
    run.add_argument(
        "--width", type=_positive_float, default=0.5, help="ResNet width"
    )
    run.add_argument(
        "--epochs", type=_count(1), default=20, help="epochs per mode/curve"
    )
    run.add_argument(
        "--bridge-epochs", type=_count(1), default=60, help="bridge epochs"
    )
    run.add_argument("--batch-size", type=_count(1), default=64)
    run.add_argument("--seed", type=_count(0), default=0)
    run.add_argument(
        "--output",
        default="runs/digits",
        help=(
            "folder for the report (report.json, report.md), the saved "
            "ensemble (ensemble.keras), the SavedModel "
            "(serving/<dataset>/<version>) and ONNX model (model.onnx); "
            "when it holds an earlier run, a new folder <output>-2, -3, ... "
            "is used instead"
        ),
    )
    return parser


def run_folder(output: str) -> str:
    """``output``, or ``output-2``, ``-3``, ... when it holds an earlier
    run; created, and checked to be writable, before any training."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"`--output` {output!r} is a file, not a folder.")
    candidate, number = output, 1
    while os.path.exists(candidate) and (
        not os.path.isdir(candidate) or os.listdir(candidate)
    ):
        number += 1
        candidate = f"{output}-{number}"
    try:
        os.makedirs(candidate, exist_ok=True)
        probe = os.path.join(candidate, ".write-check")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"`--output` {output!r} cannot be written: {error.strerror}."
        ) from error
    return candidate


def run(args) -> dict:
    import keras_bridge as kb

    if args.dataset == "digits":
        data = kb.data.load_digits(batch_size=args.batch_size, seed=args.seed)
    else:
        data = kb.data.load_tfds(
            args.dataset, batch_size=args.batch_size, data_dir=args.data_dir
        )
    args.output = run_folder(args.output)
    print(f"Writing this run to {args.output}")
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=args.depth, width=args.width
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=args.num_modes, seed=args.seed)
    ens.fit_modes(
        data.train, epochs=args.epochs, validation_data=data.validation
    )
    print("Straight line from the anchor (before curve training):")
    line = ens.curve_profile(data.test, bn_data=data.train)
    print(line)
    ens.fit_curves(data.train, validation_data=data.validation)
    report = {"line": line.to_dict(), "curves": []}
    for pair in sorted(ens.curves):
        profile = ens.curve_profile(data.test, pair=pair, bn_data=data.train)
        print(profile)
        report["curves"].append(profile.to_dict())
    ens.fit_bridge(
        data.train,
        kind="type1",
        epochs=args.bridge_epochs,
        validation_data=data.validation,
    )
    ens.fit_bridge(  # on the anchor's first curve
        data.train,
        kind="type2",
        pairs=[next(iter(ens.curves))],
        epochs=args.bridge_epochs,
        validation_data=data.validation,
    )
    evaluation = ens.evaluate(data.test, calibration_data=data.validation)
    print(evaluation)
    report["evaluation"] = evaluation.to_dict()
    os.makedirs(args.output, exist_ok=True)
    path = os.path.join(args.output, "report.json")
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2, default=_jsonable)
    with open(os.path.join(args.output, "report.md"), "w") as handle:
        handle.write(evaluation.to_markdown() + "\n")
    print(f"Report written to {path} and report.md")
    ens.save(os.path.join(args.output, "ensemble.keras"))
    base = os.path.join(args.output, "serving", args.dataset)
    ens.export(os.path.join(base, str(_next_version(base))))
    try:
        ens.export(
            os.path.join(args.output, "model.onnx"),
            format="onnx",
            overwrite=True,
        )
    except ImportError as error:
        print(f"ONNX export skipped: {error}")
    return report


def _next_version(base: str) -> int:
    """The version folder after the highest one in ``base`` (TF Serving
    serves the highest), so earlier exports are kept."""
    if not os.path.isdir(base):
        return 1
    versions = [int(name) for name in os.listdir(base) if name.isdigit()]
    return max(versions, default=0) + 1


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    return float(value)


def main(argv=None) -> int:
    """Runs the command; a bad argument or input gives one line on stderr
    and exit status 2, never a traceback."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            run(args)
    except (ValueError, OSError, FloatingPointError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"keras-bridge: error: {first}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
