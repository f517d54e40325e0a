"""Serves an exported SavedModel the way TF Serving does, in a fresh process.

Run by `tests/test_export.py` as ``python tf_serving_client.py MODEL_DIR
INPUTS.npz RESULTS.npz``. It never imports keras_bridge (nor uses any
Keras object): the model is loaded with the TF1 loader that TF Serving's
C++ server mirrors, ``tf.compat.v1.saved_model.loader.load``, and run
through the tensor names of its SignatureDefs. Requests travel as
serialized `PredictRequest` protos and answers as `PredictResponse`
protos. Results go to RESULTS.npz (arrays) and RESULTS.json (signature
descriptions and error messages).
"""

import json
import sys

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2


def describe(signature) -> dict:
    def tensors(mapping):
        return {
            key: {
                "dtype": tf.dtypes.as_dtype(info.dtype).name,
                "shape": [d.size for d in info.tensor_shape.dim],
            }
            for key, info in mapping.items()
        }

    return {
        "method_name": signature.method_name,
        "inputs": tensors(signature.inputs),
        "outputs": tensors(signature.outputs),
    }


def run_signature(sess, signature, x) -> dict:
    fetches = {key: info.name for key, info in signature.outputs.items()}
    feed = {signature.inputs["inputs"].name: x}
    return sess.run(fetches, feed_dict=feed)


def predict(sess, meta_graph, request_bytes: bytes) -> bytes:
    """Answers a serialized PredictRequest as TF Serving's Predict does."""
    request = predict_pb2.PredictRequest.FromString(request_bytes)
    name = request.model_spec.signature_name or "serving_default"
    signature = meta_graph.signature_def[name]
    feed = {
        signature.inputs[key].name: tf.make_ndarray(proto)
        for key, proto in request.inputs.items()
    }
    keys = list(request.output_filter) or list(signature.outputs)
    fetches = {key: signature.outputs[key].name for key in keys}
    values = sess.run(fetches, feed_dict=feed)
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(request.model_spec)
    response.model_spec.signature_name = name
    for key, value in values.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
    return response.SerializeToString()


def main(model_dir, inputs_path, results_path):
    inputs = dict(np.load(inputs_path))
    results, report = {}, {"errors": {}}
    with tf.compat.v1.Session(graph=tf.Graph()) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(
            sess, ["serve"], model_dir
        )
        signatures = meta_graph.signature_def
        report["signatures"] = {
            key: describe(signatures[key])
            for key in signatures
            if not key.startswith("__")
        }
        for batch, x in inputs.items():
            for key in report["signatures"]:
                outputs = run_signature(sess, signatures[key], x)
                for name, value in outputs.items():
                    results[f"session/{key}/{batch}/{name}"] = value
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.model_spec.signature_name = "serving_default"
            request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
            response = predict_pb2.PredictResponse.FromString(
                predict(sess, meta_graph, request.SerializeToString())
            )
            for name, proto in response.outputs.items():
                results[f"grpc/{batch}/{name}"] = tf.make_ndarray(proto)
        x = next(iter(inputs.values()))
        try:
            run_signature(sess, signatures["serving_default"], x[:, :-1])
        except Exception as error:  # noqa: BLE001 - the message is the point
            report["errors"]["shape"] = f"{type(error).__name__}: {error}"
    loaded = tf.saved_model.load(model_dir)
    try:
        loaded.signatures["serving_default"](
            inputs=tf.constant(x.astype("int32"))
        )
    except Exception as error:  # noqa: BLE001
        report["errors"]["dtype"] = f"{type(error).__name__}: {error}"
    report["keras_bridge_imported"] = "keras_bridge" in sys.modules
    np.savez(results_path, **results)
    with open(results_path.replace(".npz", ".json"), "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
