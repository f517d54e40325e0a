"""Serve an ensemble with TF Serving and query its REST API.

Exports a bridge ensemble (one saved with ``ens.save(...)``, given by
``--ensemble``, or a small one trained here on the bundled digits data) to
a TF Serving model folder, ``<output>/serving/<model-name>/<version>/``
(``--smoke`` serves two untrained networks instead, to check the path),
and prints

- the ``docker run ... tensorflow/serving`` command that serves it,
- a REST request body (also written to ``request.json``) and the ``curl``
  command that sends it,
- the answer the server will give, computed here from the exported
  SavedModel (the server runs the same graph).

With ``--host`` (e.g. ``--host localhost:8501``, once the container runs)
it sends the request with the standard library alone (``urllib``) and
prints the named outputs of the server's answer; without it, it only
prints what it would send. The ``serving_default`` signature answers
``probabilities``, ``class_ids``, ``member_probabilities``,
``predictive_entropy`` and ``mutual_information``; ``--signature members``
asks for each member's probabilities by name (docs/deployment.md).

Run (from the repository root):

    python examples/serve_tf_serving.py                  # trains one first
    python examples/serve_tf_serving.py --ensemble runs/digits/ensemble.keras
    python examples/serve_tf_serving.py --ensemble ENSEMBLE.keras \\
        --host localhost:8501                            # query a server
    python examples/serve_tf_serving.py --smoke          # seconds, no training

Inputs are the digits test images when the ensemble takes 8x8x1 images,
otherwise ``--inputs FILE.npy`` (an array of inputs) or, failing that,
random ones. Outputs, under ``--output`` (default
``runs/examples/serve_tf_serving``; a folder that holds an earlier run is
kept and ``<output>-2``, ``-3``, ... is used instead): ``serving/``,
``request.json`` and, with ``--host``, ``response.json``.
"""

import argparse
import json
import os
import shlex
import sys
import urllib.error
import urllib.request


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Export a bridge ensemble for TF Serving, print the docker and "
            "REST commands, and query a running server."
        )
    )
    parser.add_argument(
        "--ensemble",
        default=None,
        help="a .keras file written by BridgeEnsemble.save; default: "
        "train a small ensemble on digits",
    )
    parser.add_argument(
        "--model-name",
        default="digits",
        help="TF Serving model name (the folder under serving/ and the "
        "URL's /v1/models/<name>)",
    )
    parser.add_argument(
        "--version", type=int, default=1, help="model version folder"
    )
    parser.add_argument(
        "--signature",
        choices=("serving_default", "members"),
        default="serving_default",
        help="signature to query: the ensemble outputs, or each member's "
        "probabilities",
    )
    parser.add_argument(
        "--num-inputs", type=int, default=2, help="inputs in the request"
    )
    parser.add_argument(
        "--inputs",
        default=None,
        help="a .npy file of inputs, for an ensemble that does not take "
        "8x8x1 digits",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="host:port (or URL) of TF Serving's REST API, e.g. "
        "localhost:8501; without it nothing is sent",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="request timeout (s)"
    )
    parser.add_argument(
        "--output",
        default=os.path.join("runs", "examples", "serve_tf_serving"),
        help="output folder; when it holds an earlier run, <output>-2, "
        "-3, ... is used instead",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="serve two untrained networks instead of training (seconds; "
        "only checks the serving path)",
    )
    return parser.parse_args(argv)


def get_ensemble(args):
    """The ensemble of ``--ensemble``, or a small one trained on digits
    (with ``--smoke``: two untrained networks, no training at all)."""
    import keras

    import keras_bridge as kb

    if args.ensemble is not None:
        print(f"Loading {args.ensemble}")
        return kb.BridgeEnsemble.load(args.ensemble)
    data = kb.data.load_digits()
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    if args.smoke:
        print("Smoke run: serving two untrained networks (answers are noise)")
        ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
        return ens
    print("Training a small ensemble on digits (2 modes, 1 curve, 1 bridge)")
    ens.fit_modes(data.train, epochs=15, verbose=0)
    ens.fit_curves(data.train, verbose=0)
    ens.fit_bridge(data.train, epochs=30, verbose=0)
    ens.calibrate(data.validation)
    return ens


def get_inputs(args, input_shape):
    """``--num-inputs`` inputs of shape ``input_shape`` (float32)."""
    import numpy as np

    import keras_bridge as kb

    if args.inputs is not None:
        x = np.load(args.inputs)
    elif tuple(input_shape) == (8, 8, 1):
        x, _ = kb.data.to_numpy(kb.data.load_digits().test)
    else:
        print(f"No --inputs: sending random inputs of shape {input_shape}")
        x = np.random.default_rng(0).uniform(
            size=(args.num_inputs, *input_shape)
        )
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise SystemExit(
            f"error: --inputs holds inputs of shape {x.shape[1:]}; the "
            f"ensemble takes {tuple(input_shape)}."
        )
    return x[: args.num_inputs].astype("float32")


def rest_url(host: str, model_name: str) -> str:
    base = host if "://" in host else f"http://{host}"
    return f"{base.rstrip('/')}/v1/models/{model_name}:predict"


def query(url: str, body: dict, timeout: float) -> dict:
    """POSTs ``body`` as JSON to TF Serving's REST API; its JSON answer."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:  # the server says why
        detail = error.read().decode(errors="replace")
        message = f"error: {url} answered {error.code}: {detail}"
        raise SystemExit(message) from None
    except urllib.error.URLError as error:
        raise SystemExit(
            f"error: cannot reach {url} ({error.reason}); is the server "
            "running (see the docker command above)?"
        ) from None


def show(predictions: list) -> None:
    """Prints each input's named outputs (TF Serving's row format)."""
    for index, outputs in enumerate(predictions):
        print(f"input {index}:")
        for name in sorted(outputs):
            print(f"  {name}: {_rounded(outputs[name])}")


def _rounded(value):
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return round(value, 4) if isinstance(value, float) else value


def local_answer(saved_model: str, signature: str, x) -> list:
    """What the server answers, from the exported SavedModel: one dict of
    named outputs per input (TF Serving's row format)."""
    import tensorflow as tf

    function = tf.saved_model.load(saved_model).signatures[signature]
    outputs = {k: v.numpy() for k, v in function(inputs=tf.constant(x)).items()}
    return [
        {name: value[i].tolist() for name, value in outputs.items()}
        for i in range(len(x))
    ]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_bridge.atomic_files import run_folder

    output = run_folder(args.output)
    print(f"Writing to {output}")
    ens = get_ensemble(args)
    base = os.path.abspath(os.path.join(output, "serving", args.model_name))
    saved_model = ens.export(os.path.join(base, str(args.version)))
    print("Members, in the order of member_probabilities:")
    print(f"  {ens.member_names()}")

    x = get_inputs(args, ens.input_shape)
    body = {"signature_name": args.signature, "instances": x.tolist()}
    request_file = os.path.join(output, "request.json")
    with open(request_file, "w") as handle:
        json.dump(body, handle)
    host = args.host or "localhost:8501"
    url = rest_url(host, args.model_name)
    docker = [
        "docker", "run", "--rm", "-p", "8500:8500", "-p", "8501:8501",
        "--mount", f"type=bind,source={base},target=/models/{args.model_name}",
        "-e", f"MODEL_NAME={args.model_name}", "-t", "tensorflow/serving",
    ]  # fmt: skip
    print("\nServe it (gRPC on 8500, REST on 8501):")
    print("  " + shlex.join(docker))
    print("\nQuery it:")
    curl = ["curl", "-s", "-X", "POST", url, "-d", f"@{request_file}"]
    print("  " + shlex.join(curl))
    preview = json.dumps(body)
    print(f"\nRequest body ({len(x)} inputs, {len(preview)} bytes):")
    print(f"  {preview[:160]}{' ...' if len(preview) > 160 else ''}")

    expected = local_answer(saved_model, args.signature, x)
    if args.host is None:
        print("\nNo --host: nothing sent. The server will answer")
        print('{"predictions": [...]}, one dict per input, like this one,')
        print("computed from the exported SavedModel:")
        show(expected)
        return 0
    print(f"\nPOST {url}")
    answer = query(url, body, args.timeout)
    with open(os.path.join(output, "response.json"), "w") as handle:
        json.dump(answer, handle)
    if "predictions" not in answer:
        print(f"error: unexpected answer: {json.dumps(answer)[:500]}")
        return 1
    print("The server answered:")
    show(answer["predictions"])
    print(
        "Largest difference from the local SavedModel's answer: "
        f"{largest_difference(answer['predictions'], expected):.2e}"
    )
    return 0


def largest_difference(answers: list, expected: list) -> float:
    """Largest absolute difference over the outputs both answers hold."""
    import numpy as np

    differences = [0.0]
    for got, want in zip(answers, expected):
        for name in set(got) & set(want):
            gap = np.abs(np.subtract(got[name], want[name], dtype="float64"))
            differences.append(float(np.max(gap)))
    return max(differences)


if __name__ == "__main__":
    sys.exit(main())
