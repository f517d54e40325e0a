"""The CIFAR recipe: ResNet modes, curves, Type I and II bridges, export.

The paper's end-to-end recipe (docs/bridges.md) on CIFAR-10 (or
CIFAR-100) from TensorFlow Datasets, with this library's default
optimiser (Adam, cosine decay); the epochs are this script's choice, not
the paper's schedule:

1. load the data with ``kb.data.load_tfds`` and augment the training set
   (random horizontal flips and shifts of up to 4 pixels);
2. train ``--num-modes`` ResNet-``depth`` x ``width`` networks (the modes);
3. measure the straight line between the anchor and another mode, fit a
   Bezier curve from the anchor to every other mode, and measure the
   curve (the barrier it removes);
4. train one Type I bridge per curve (reads the anchor's ``stage2``
   features: "Single + k Type I") and one Type II bridge per curve (reads
   both modes' features: "DE-m + n Type II");
5. evaluate every configuration against deep ensembles DE-1 .. DE-M
   (accuracy, NLL, ECE, Brier, their calibrated twins, DEE, FLOPs) and
   print the published ResNet-32 figures beside DE-k;
6. save the ensemble and export it for TF Serving (and ONNX when
   tf2onnx is installed).

Data. ``kb.data.load_tfds`` never downloads unless asked. Either prepare
CIFAR-10 once on a machine with network access and point ``--data-dir``
at it (copy the folder over if needed):

    tfds build cifar10 --data_dir ~/tensorflow_datasets

or let this script download and prepare it (about 160 MB) with
``--download`` (passes ``download=True`` to TFDS; without network access
TFDS then hangs for minutes before it fails). Without prepared data and
without ``--download`` the script stops at once with a message saying so.

Run (from the repository root; a GPU is advised, the defaults train for
hours on a CPU):

    python examples/cifar10_tfds.py --data-dir ~/tensorflow_datasets
    python examples/cifar10_tfds.py --dataset cifar100 --download
    python examples/cifar10_tfds.py --smoke --data-dir ~/tensorflow_datasets

``--smoke`` shrinks everything (ResNet-8 x 0.25, 2 modes, 1 epoch per
stage, 2 batches of data) to check the script runs; the tests run it on
TFDS' mock data (``tfds.testing.mock_data``), offline.

Outputs, under ``--output`` (default ``runs/examples/<dataset>``; a
folder that holds an earlier run is kept and ``<output>-2``, ``-3``, ...
is used instead): ``report.md``, ``report.json``, ``report.png``,
``curve.png`` (line and curve profiles), ``ensemble.keras``,
``serving/<dataset>/1/`` (SavedModel) and ``model.onnx``.
"""

import argparse
import dataclasses
import json
import os

#: Published ResNet-32 deep ensembles (accuracy %, calibrated NLL), DE-1..4.
REFERENCE = {
    "cifar10": [(91.78, 0.287), (93.07, 0.233), (93.37, 0.216), (93.59, 0.205)],
    "cifar100": [
        (74.06, 1.060),
        (76.21, 0.928),
        (77.23, 0.876),
        (77.79, 0.846),
    ],
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Train a bridge ensemble of ResNets on CIFAR-10/100 from "
            "TensorFlow Datasets, evaluate it against deep ensembles and "
            "export it."
        )
    )
    parser.add_argument(
        "--dataset",
        choices=("cifar10", "cifar100"),
        default="cifar10",
        help="TFDS dataset name",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data_dir holding the prepared dataset (default: TFDS' "
        "own, ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download and prepare the dataset (needs network); "
        "off by default, so nothing is downloaded unless asked",
    )
    parser.add_argument(
        "--depth",
        type=int,
        choices=(8, 14, 20, 32, 44, 56),
        default=32,
        help="ResNet depth (the reference figures are ResNet-32)",
    )
    parser.add_argument(
        "--width", type=float, default=1.0, help="ResNet channel multiplier"
    )
    parser.add_argument(
        "--num-modes",
        type=int,
        default=4,
        help="modes to train (>= 2): DE-1 .. DE-num-modes are reported",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="epochs per mode; curves train as long",
    )
    parser.add_argument(
        "--bridge-epochs",
        type=int,
        default=60,
        help="most epochs per bridge call (early stopping on val_kl)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--max-flops",
        type=float,
        default=None,
        help="most one Type I head may cost, as a fraction of one ResNet "
        "pass (Type II: twice); default the library's 0.12",
    )
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="train without random flips and shifts",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--output",
        default=None,
        help="output folder (default runs/examples/<dataset>); when it "
        "holds an earlier run, <output>-2, -3, ... is used instead",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings (ResNet-8x0.25, 2 modes, 1 epoch per stage, 2 "
        "batches of 32) that only check the script runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.depth, args.width, args.num_modes = 8, 0.25, 2
        args.epochs, args.bridge_epochs, args.batch_size = 1, 1, 32
    if args.num_modes < 2:
        parser.error("--num-modes must be at least 2 (curves join two modes)")
    if args.output is None:
        args.output = os.path.join("runs", "examples", args.dataset)
    return args


def load_data(args):
    """The TFDS splits (train 90 %, validation 10 % of train, test), the
    training set augmented; in smoke mode 2 batches of each."""
    import keras
    import tensorflow as tf

    import keras_bridge as kb

    data = kb.data.load_tfds(
        args.dataset,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        download=args.download,
        seed=args.seed,
    )
    if not args.no_augment:
        augment = keras.Sequential(
            [
                keras.layers.RandomFlip("horizontal", seed=args.seed),
                # 4 pixels of 32, zero padded: the usual CIFAR crop.
                keras.layers.RandomTranslation(
                    0.125, 0.125, fill_mode="constant", seed=args.seed
                ),
            ]
        )
        train = data.train.map(
            lambda x, y: (augment(x, training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        data = dataclasses.replace(data, train=train)
    if args.smoke:
        data = dataclasses.replace(
            data,
            train=data.train.take(2),
            validation=data.validation.take(2),
            test=data.test.take(2),
        )
    return data


def train(args, data, verbose):
    """Modes, curves and both kinds of bridges; returns the ensemble and
    the (line, curve) profiles of the anchor's first curve."""
    import keras

    import keras_bridge as kb

    backbone = kb.models.resnet(
        data.input_shape,
        data.num_classes,
        depth=args.depth,
        width=args.width,
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=args.num_modes, seed=args.seed)
    print(
        f"{backbone.name}: {kb.flops(backbone) / 1e6:.1f} MFLOPs per image; "
        f"bridges read {ens.feature_layer!r}."
    )
    ens.fit_modes(
        data.train,
        epochs=args.epochs,
        validation_data=data.validation,
        verbose=verbose,
    )
    points = 2 if args.smoke else 11  # 2: the ends, no BatchNorm refits
    line = ens.curve_profile(
        data.test, num_points=points, bn_data=data.train, verbose=verbose
    )
    ens.fit_curves(data.train, validation_data=data.validation, verbose=verbose)
    curve = ens.curve_profile(
        data.test, num_points=points, bn_data=data.train, verbose=verbose
    )
    print(line)
    print(curve)

    def early_stopping():
        return keras.callbacks.EarlyStopping(
            monitor="val_kl",
            mode="min",
            patience=10,
            restore_best_weights=True,
        )

    for kind, feature_maps in (("type1", 1), ("type2", 2)):
        budget = args.max_flops and args.max_flops * feature_maps
        ens.fit_bridge(
            data.train,
            kind=kind,
            epochs=args.bridge_epochs,
            validation_data=data.validation,
            # None: the library's default budget, 0.12 per map
            head={"max_flops": budget},
            callbacks=[early_stopping()],
            verbose=verbose,
        )
    return ens, (line, curve)


def write_report(args, ens, data, profiles, output) -> None:
    report = ens.evaluate(data.test, calibration_data=data.validation)
    print(report)
    reference = REFERENCE[args.dataset]
    print("Published ResNet-32 deep ensembles (accuracy %, calibrated NLL):")
    for k, (accuracy, cnll) in enumerate(reference, start=1):
        if k <= args.num_modes:
            ours = report.row(f"DE-{k}")
            print(
                f"  DE-{k}: published {accuracy:.2f} / {cnll:.3f}, here "
                f"{100 * ours['accuracy']:.2f} / {ours['cnll']:.3f}"
            )
    with open(os.path.join(output, "report.md"), "w") as handle:
        handle.write(report.to_markdown() + "\n")
    with open(os.path.join(output, "report.json"), "w") as handle:
        json.dump(report.to_dict(), handle, indent=2, default=_jsonable)
    report.plot(path=os.path.join(output, "report.png"), kind="flops")
    line, curve = profiles
    line.plot(path=os.path.join(output, "curve.png"), others=[curve])


def export(args, ens, output) -> None:
    ens.save(os.path.join(output, "ensemble.keras"))
    ens.export(os.path.join(output, "serving", args.dataset, "1"))
    try:
        ens.export(os.path.join(output, "model.onnx"), format="onnx")
    except ImportError as error:  # tf2onnx is an optional extra
        print(f"ONNX export skipped: {error}")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        data = load_data(args)
    except FileNotFoundError as error:
        print(f"error: {error}")
        return 2
    from keras_bridge.atomic_files import run_folder

    output = run_folder(args.output)
    print(f"Writing to {output}")
    verbose = 0 if args.smoke else 2  # 2: one line per epoch
    ens, profiles = train(args, data, verbose)
    write_report(args, ens, data, profiles, output)
    # `evaluate` changes nothing: the saved and served temperature is fitted
    # here.
    ens.calibrate(data.validation)
    export(args, ens, output)
    print(f"Done: {sorted(os.listdir(output))} in {output}")
    return 0


def _jsonable(value):
    """NumPy values and tuples of the report, as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return float(value)


if __name__ == "__main__":
    raise SystemExit(main())
