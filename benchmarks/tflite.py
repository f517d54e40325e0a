"""Benchmark: TFLite (LiteRT) exports against the SavedModel, on digits.

Exports one ensemble as a SavedModel and as TFLite files (float32,
dynamic-range and float16 quantisation), then reports for each file its
size (the SavedModel: its whole folder), the median latency of one
request at batch 1 (the SavedModel's ``serving_default`` signature after
``tf.saved_model.load``; TFLite: the interpreter's signature runner,
default threads; runs interleaved in one process), the test accuracy
(every test image at batch 1), and against the float32 TFLite file the
accuracy change, the top-1 agreement and the largest change of an
ensemble probability.

The ensemble is trained briefly on digits (two modes, their curve and a
Type I and a Type II bridge), or loaded with ``--ensemble``.

Usage: python benchmarks/tflite.py [--ensemble e.keras] [--runs 200]
"""

import argparse
import os
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import interleaved_medians  # noqa: E402

import keras_bridge as kb  # noqa: E402

KINDS = (None, "dynamic_range", "float16")


def make_ensemble(args, data):
    if args.ensemble:
        return kb.BridgeEnsemble.load(args.ensemble)
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=args.seed)
    ens.fit_modes(data.train, epochs=args.epochs, verbose=0)
    ens.fit_curves(data.train, epochs=args.epochs, verbose=0)
    ens.fit_bridge(data.train, kind="type1", epochs=20, verbose=0)
    ens.fit_bridge(data.train, kind="type2", epochs=20, verbose=0)
    return ens


def folder_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


def tflite_runner(path: str):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(?s).*tf.lite.Interpreter is")
        interpreter = tf.lite.Interpreter(model_path=path)
    return interpreter.get_signature_runner("serving_default")


def export_all(ens, folder: str) -> dict:
    """Exports the SavedModel and the TFLite files; returns, per name,
    (path, size in bytes, export seconds, a batch-1 function)."""
    exported = {}
    start = time.perf_counter()
    saved = ens.export(os.path.join(folder, "digits", "1"), verbose=False)
    seconds = time.perf_counter() - start
    signature = tf.saved_model.load(saved).signatures["serving_default"]

    def serve(x):
        outputs = signature(inputs=tf.constant(x))
        return {name: value.numpy() for name, value in outputs.items()}

    exported["SavedModel"] = (saved, folder_size(saved), seconds, serve)
    for kind in KINDS:
        name = f"TFLite {kind or 'float32'}"
        path = os.path.join(folder, f"digits_{kind or 'float32'}.tflite")
        start = time.perf_counter()
        ens.export(path, format="litert", quantization=kind, verbose=False)
        seconds = time.perf_counter() - start
        runner = tflite_runner(path)
        exported[name] = (
            path,
            os.path.getsize(path),
            seconds,
            lambda x, r=runner: r(inputs=x),
        )
    return exported


def one_by_one(fn, x) -> np.ndarray:
    """Probabilities of every row of ``x``, asked for at batch 1."""
    rows = [fn(x[i : i + 1])["probabilities"] for i in range(len(x))]
    return np.concatenate(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", default=None, help="a saved .keras")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = kb.data.load_digits(batch_size=64)
    ens = make_ensemble(args, data)
    x_test, y_test = kb.data.to_numpy(data.test)
    x_test = x_test.astype("float32")
    folder = tempfile.mkdtemp(prefix="keras_bridge_tflite_bench_")
    exported = export_all(ens, folder)
    one = x_test[:1]
    times = interleaved_medians(
        {name: (lambda f=fn: f(one)) for name, (*_, fn) in exported.items()},
        args.runs,
    )
    probabilities = {
        name: one_by_one(fn, x_test) for name, (*_, fn) in exported.items()
    }
    reference = probabilities["TFLite float32"]
    base_accuracy = np.mean(reference.argmax(-1) == y_test)
    base_size = exported["SavedModel"][1]
    base_time = times["SavedModel"]
    print(
        f"{len(ens.member_names())} members ({', '.join(ens.member_names())})"
        f"; {len(x_test)} test images; latency: median of {args.runs} "
        f"interleaved runs at batch 1, {os.cpu_count()} CPU cores\n"
    )
    print(
        "| file | size (KB) | size / SavedModel | latency (ms) "
        "| latency / SavedModel | export (s) | test accuracy "
        "| accuracy change | top-1 agreement | max abs prob diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (_, size, seconds, _) in exported.items():
        p = probabilities[name]
        accuracy = np.mean(p.argmax(-1) == y_test)
        agreement = np.mean(p.argmax(-1) == reference.argmax(-1))
        diff = np.abs(p - reference).max()
        print(
            f"| {name} | {size / 1024:.0f} | {size / base_size:.2f} | "
            f"{1e3 * times[name]:.3f} | {times[name] / base_time:.2f} | "
            f"{seconds:.1f} | {accuracy:.4f} | "
            f"{100 * (accuracy - base_accuracy):+.2f} pt | {agreement:.4f} | "
            f"{diff:.1e} |"
        )


if __name__ == "__main__":
    main()
