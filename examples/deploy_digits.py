"""Train a bridge ensemble on digits, save it, and export it for serving.

Writes, under runs/deploy/: ensemble.keras (the whole ensemble),
serving/digits/1/ (a SavedModel for TF Serving), digits.onnx, and
request.json (a TF Serving REST request body for two test images). Then
it answers the request with the exported SavedModel and with
onnxruntime, and checks both against `ens.predict`.

Run: python examples/deploy_digits.py
"""

import json
import os

import numpy as np
import tensorflow as tf

import keras_bridge as kb

OUTPUT = os.path.join("runs", "deploy")


def main():
    data = kb.data.load_digits()
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(data.train, epochs=15, verbose=0)
    ens.fit_curves(data.train, validation_data=data.validation, verbose=0)
    ens.fit_bridge(data.train, epochs=40, verbose=0)
    ens.calibrate(data.validation)

    ens.save(os.path.join(OUTPUT, "ensemble.keras"))
    saved = ens.export(
        os.path.join(OUTPUT, "serving", "digits", "1"), overwrite=True
    )
    onnx_path = ens.export(
        os.path.join(OUTPUT, "digits.onnx"), format="onnx", overwrite=True
    )

    x, y = kb.data.to_numpy(data.test)
    x = x[:2]
    with open(os.path.join(OUTPUT, "request.json"), "w") as handle:
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
