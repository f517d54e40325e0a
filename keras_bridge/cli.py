"""The ``keras-bridge`` command."""

import argparse
import json
import os
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-bridge",
        description="Cheap deep ensembles: modes, curves and bridges.",
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
    run.add_argument("--num-modes", type=int, default=3)
    run.add_argument("--depth", type=int, default=8)
    run.add_argument("--width", type=float, default=0.5)
    run.add_argument("--epochs", type=int, default=20)
    run.add_argument("--bridge-epochs", type=int, default=60)
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--output",
        default="runs/digits",
        help=(
            "folder for the report (report.json, report.md), the saved "
            "ensemble (ensemble.keras), the SavedModel "
            "(serving/<dataset>/<version>) and ONNX model (model.onnx)"
        ),
    )
    return parser


def run(args) -> dict:
    import keras_bridge as kb

    if args.dataset == "digits":
        data = kb.data.load_digits(batch_size=args.batch_size, seed=args.seed)
    else:
        data = kb.data.load_tfds(
            args.dataset, batch_size=args.batch_size, data_dir=args.data_dir
        )
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=args.depth, width=args.width
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=args.num_modes, seed=args.seed)
    ens.fit_modes(
        data.train, epochs=args.epochs, validation_data=data.validation
    )
    print("Straight line between modes 0 and 1 (before curve training):")
    line = ens.curve_profile(data.test, pair=(0, 1))
    print(line)
    ens.fit_curves(data.train, validation_data=data.validation)
    report = {"line": line.to_dict(), "curves": []}
    for pair in sorted(ens.curves):
        profile = ens.curve_profile(data.test, pair=pair)
        print(profile)
        report["curves"].append(profile.to_dict())
    ens.fit_bridge(
        data.train,
        kind="type1",
        epochs=args.bridge_epochs,
        validation_data=data.validation,
    )
    ens.fit_bridge(
        data.train,
        kind="type2",
        pairs=[(0, 1)],
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
    args = _parser().parse_args(argv)
    if args.command == "run":
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
