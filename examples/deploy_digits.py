"""Train a bridge ensemble on digits, save it, and export it for serving.

Writes, under ``--output`` (default ``runs/deploy``; a folder that holds
an earlier run is kept and ``<output>-2``, ``-3``, ... is used instead):
ensemble.keras (the whole ensemble), serving/digits/1/ (a SavedModel for
TF Serving), digits.onnx, and request.json (a TF Serving REST request
body for two test images). Then it answers the request with the exported
SavedModel and with onnxruntime, and checks both against `ens.predict`.
`examples/serve_tf_serving.py` serves and queries such an export.

Run (from the repository root):

    python examples/deploy_digits.py            # the full run
    python examples/deploy_digits.py --smoke    # tiny: only checks it runs
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_bridge as kb  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Train a digits bridge ensemble, save it, export it as a "
            "SavedModel and ONNX, and check both exports."
        )
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=15,
        help="epochs per mode and curve (the bridge trains 40)",
    )
    parser.add_argument(
        "--output",
        default=os.path.join("runs", "deploy"),
        help="output folder; when it holds an earlier run, <output>-2, "
        "-3, ... is used instead",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="1 epoch per stage: only checks the script runs",
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    output = kb.atomic_files.run_folder(args.output)
    print(f"Writing to {output}")
    epochs, bridge_epochs = (1, 1) if args.smoke else (args.epochs, 40)
    data = kb.data.load_digits()
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(data.train, epochs=epochs, verbose=0)
    ens.fit_curves(data.train, validation_data=data.validation, verbose=0)
    ens.fit_bridge(data.train, epochs=bridge_epochs, verbose=0)
    ens.calibrate(data.validation)

    ens.save(os.path.join(output, "ensemble.keras"))
    saved = ens.export(os.path.join(output, "serving", "digits", "1"))
    onnx_path = ens.export(os.path.join(output, "digits.onnx"), format="onnx")

    x, y = kb.data.to_numpy(data.test)
    x = x[:2]
    with open(os.path.join(output, "request.json"), "w") as handle:
        json.dump({"instances": x.tolist()}, handle)

    expected = ens.predict(x)
    served = tf.saved_model.load(saved).signatures["serving_default"]
    outputs = {k: v.numpy() for k, v in served(inputs=tf.constant(x)).items()}

    import onnxruntime as ort

    session = ort.InferenceSession(onnx_path)
    names = [o.name for o in session.get_outputs()]
    onnx_outputs = dict(zip(names, session.run(None, {"inputs": x})))
    for key, value in expected.items():
        np.testing.assert_allclose(outputs[key], value, atol=1e-5)
        np.testing.assert_allclose(onnx_outputs[key], value, atol=1e-5)
    print("members:", ens.member_names())
    print("labels:", y[:2], "served class_ids:", outputs["class_ids"])
    print("probabilities:", np.round(outputs["probabilities"], 3))


if __name__ == "__main__":
    main()
