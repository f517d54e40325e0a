"""Bring your own backbone: a small functional CNN through the whole flow.

Any functional Keras model from inputs to logits can be the backbone of a
`BridgeEnsemble`. Name the layer the bridges should read and pass it as
``feature_layer=``: every bridge is a slimmed copy of the layers after it,
so an early layer gives expressive but costly bridges, a late one cheap
but weaker ones. On the bundled digits data (offline), this script

1. builds a small CNN whose 4x4 feature map is the layer ``"features"``,
2. trains the modes (independent copies of it),
3. fits a curve from the anchor mode to each other mode and prints how
   each curve's midpoint scores against its ends,
4. trains one Type I bridge per curve (distilled from the curve's
   midpoint, reading the anchor's ``"features"``),
5. prints the ensemble report (DE-k, Single + k Type I, ...),
6. picks the members that pay off on validation data (``select_members``)
   and predicts the test set with only those.

Run (from the repository root):

    python examples/custom_backbone.py            # the full run
    python examples/custom_backbone.py --smoke    # tiny: only checks it runs

Outputs, under ``--output`` (default ``runs/examples/custom_backbone``; a
folder that holds an earlier run is kept and ``<output>-2``, ``-3``, ...
is used instead): ``report.md`` and ``report.json`` (the report),
``report.png`` (metrics against FLOPs) and ``ensemble.keras`` (reload with
``kb.BridgeEnsemble.load``).
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

import keras_bridge as kb  # noqa: E402

#: The layer the bridges read: the end of the second block.
FEATURE_LAYER = "features"


def small_cnn(input_shape, num_classes: int, width: int = 32) -> keras.Model:
    """A user's own model: two conv blocks, a conv tail and a classifier.

    It outputs logits (a final softmax would be removed, with a warning).
    The layer named `FEATURE_LAYER` is a 4x4 map on digits that every
    path from input to output runs through, so bridges can read it.
    """

    def conv_bn_relu(x, filters, name):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(name=name)(x)

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = conv_bn_relu(inputs, width, "block1_a")
    x = conv_bn_relu(x, width, "block1")
    x = layers.MaxPooling2D(name="downsample")(x)
    x = conv_bn_relu(x, 2 * width, "block2_a")
    x = conv_bn_relu(x, 2 * width, FEATURE_LAYER)
    x = conv_bn_relu(x, 2 * width, "tail_a")
    x = conv_bn_relu(x, 2 * width, "tail_b")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Train a bridge ensemble of your own functional Keras model "
            "(a small CNN) on the bundled digits data."
        )
    )
    parser.add_argument(
        "--num-modes", type=int, default=4, help="modes to train (>= 2)"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=30,
        help="epochs per mode; curves train as long (shorter curves give "
        "poor midpoints, and bridges are only as good as their teachers)",
    )
    parser.add_argument(
        "--bridge-epochs",
        type=int,
        default=60,
        help="most epochs per bridge (early stopping on val_kl)",
    )
    parser.add_argument(
        "--width", type=int, default=32, help="channels of the first block"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--output",
        default=os.path.join("runs", "examples", "custom_backbone"),
        help="output folder; when it holds an earlier run, <output>-2, "
        "-3, ... is used instead",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings (2 modes, 2 epochs per stage, a narrow CNN) "
        "that only check the script runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_modes, args.epochs, args.bridge_epochs = 2, 2, 2
        args.width = 8
    if args.num_modes < 2:
        parser.error("--num-modes must be at least 2 (curves join two modes)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    output = kb.atomic_files.run_folder(args.output)
    print(f"Writing to {output}")
    verbose = 0 if args.smoke else 2  # 2: one line per epoch
    data = kb.data.load_digits(seed=args.seed)

    backbone = small_cnn(data.input_shape, data.num_classes, args.width)
    ens = kb.BridgeEnsemble(
        backbone,
        feature_layer=FEATURE_LAYER,
        num_modes=args.num_modes,
        seed=args.seed,
    )
    print(
        f"Backbone {backbone.name}: {kb.flops(backbone):,} FLOPs per image; "
        f"bridges read {ens.feature_layer!r}."
    )

    ens.fit_modes(
        data.train,
        epochs=args.epochs,
        validation_data=data.validation,
        verbose=verbose,
    )
    # Curves from the anchor (the best mode on validation) to every other.
    ens.fit_curves(data.train, validation_data=data.validation, verbose=verbose)
    for (start, end), check in sorted(ens.curve_checks.items()):
        print(
            f"curve {start} -> {end}: validation accuracy start "
            f"{check['start']:.4f}, midpoint {check['mid']:.4f}, end "
            f"{check['end']:.4f}"
        )

    ens.fit_bridge(
        data.train,
        kind="type1",
        epochs=args.bridge_epochs,
        validation_data=data.validation,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_kl",
                mode="min",
                patience=10,
                restore_best_weights=True,
            )
        ],
        verbose=verbose,
    )

    report = ens.evaluate(data.test, calibration_data=data.validation)
    print(report)
    with open(os.path.join(output, "report.md"), "w") as handle:
        handle.write(report.to_markdown() + "\n")
    with open(os.path.join(output, "report.json"), "w") as handle:
        json.dump(report.to_dict(), handle, indent=2, default=_jsonable)
    report.plot(path=os.path.join(output, "report.png"), kind="flops")
    # Saved with the temperature of all the members (`evaluate` changes
    # nothing; `calibrate` fits it).
    ens.calibrate(data.validation)
    ens.save(os.path.join(output, "ensemble.keras"))

    members = ens.select_members(data.validation)
    print(f"Members that pay off on validation data: {members}")
    # One temperature serves the ensemble: refit it for the chosen subset.
    ens.calibrate(data.validation, members=members)
    x_test, y_test = kb.data.to_numpy(data.test)
    outputs = ens.predict(x_test, members=members)
    accuracy = float(np.mean(outputs["class_ids"] == y_test))
    print(
        f"Selected ensemble on the test set: accuracy {accuracy:.4f}; "
        f"outputs {sorted(outputs)}; member_probabilities shape "
        f"{outputs['member_probabilities'].shape}"
    )
    print(
        f"Saved report.md, report.json, report.png, ensemble.keras in {output}"
    )


def _jsonable(value):
    """NumPy scalars, arrays and tuples of the report, as JSON values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return float(value)


if __name__ == "__main__":
    main()
