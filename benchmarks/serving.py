"""Benchmark: serving latency of exported ensembles, TF vs onnxruntime.

Exports three configurations of one ensemble (Single, Single + 4 Type I
bridges, DE-5) as a SavedModel and as ONNX, then times, in one process
and interleaved, the SavedModel's ``serving_default`` signature (TF,
``tf.saved_model.load``) and the ONNX model (onnxruntime, CPU) at batch 1
and batch 256. Prints medians, ratios to Single on the same runtime, the
onnxruntime / TF ratio, and the export times.

The cost of a forward pass does not depend on the weights, so the
ensemble is trained only briefly (``--epochs``). ``--size 32`` uses random
32x32x3 inputs and a wider ResNet instead of the digits.

Goals: onnxruntime no slower than TF on the same model; Single + 4
bridges <= 1.6x Single at batch 256; export <= 10 s.

Usage: python benchmarks/serving.py [--runs 30] [--size 32 --depth 20]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import tensorflow as tf  # noqa: E402
from timing import interleaved_medians  # noqa: E402

import keras_bridge as kb  # noqa: E402


def make_data(args):
    if args.size is None:
        return kb.data.load_digits(batch_size=64)
    rng = np.random.default_rng(0)
    shape = (args.size, args.size, 3)
    x = rng.random((512, *shape), dtype="float32")
    y = rng.integers(0, 10, 512).astype("int32")
    pipeline = kb.data.make_pipeline(x, y, 64)
    return kb.data.DataSplits(pipeline, pipeline, pipeline, shape, 10)


def make_ensemble(args):
    data = make_data(args)
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=args.depth, width=args.width
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=5, seed=0)
    ens.fit_modes(data.train, epochs=args.epochs, verbose=0)
    ens.fit_curves(data.train, epochs=args.epochs, verbose=0)
    ens.fit_bridge(data.train, epochs=args.epochs, verbose=0)
    return ens, data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=float, default=0.5)
    args = parser.parse_args(argv)

    ens, data = make_ensemble(args)
    modes = [f"mode_{i}" for i in range(5)]
    bridges = [n for n in ens.member_names() if n.startswith("type1")]
    configs = {
        "Single": modes[:1],
        "Single + 4 bridges": modes[:1] + bridges[:4],
        "DE-5": modes,
    }
    folder = tempfile.mkdtemp(prefix="keras_bridge_serving_")
    runners, export_times = {}, {}
    for index, (name, members) in enumerate(configs.items()):
        saved = os.path.join(folder, "model", str(index + 1))
        start = time.perf_counter()
        ens.export(saved, members=members, verbose=False)
        export_times[(name, "SavedModel")] = time.perf_counter() - start
        onnx_path = os.path.join(folder, f"model{index + 1}.onnx")
        start = time.perf_counter()
        ens.export(onnx_path, "onnx", members=members, verbose=False)
        export_times[(name, "ONNX")] = time.perf_counter() - start
        signature = tf.saved_model.load(saved).signatures["serving_default"]
        session = ort.InferenceSession(
            onnx_path, providers=["CPUExecutionProvider"]
        )
        runners[name] = (signature, session)

    x_test, _ = kb.data.to_numpy(data.test)
    print(
        f"Latency, median of {args.runs} interleaved runs, "
        f"{os.cpu_count()} CPU cores, input {x_test.shape[1:]}\n"
    )
    print(
        "| configuration | batch | TF (ms) | vs Single | onnxruntime (ms) "
        "| vs Single | onnxruntime / TF |"
    )
    print("|---|---|---|---|---|---|---|")
    for batch in (1, 256):
        x = np.resize(x_test, (batch, *x_test.shape[1:])).astype("float32")
        tensor = tf.constant(x)
        fns = {}
        for name, (signature, session) in runners.items():
            fns[(name, "tf")] = lambda s=signature, t=tensor: s(inputs=t)
            fns[(name, "ort")] = lambda s=session, x=x: s.run(
                None, {"inputs": x}
            )
        times = interleaved_medians(fns, args.runs)
        for name in configs:
            tf_time, ort_time = times[(name, "tf")], times[(name, "ort")]
            print(
                f"| {name} | {batch} | {1e3 * tf_time:.2f} | "
                f"{tf_time / times[('Single', 'tf')]:.2f}x | "
                f"{1e3 * ort_time:.2f} | "
                f"{ort_time / times[('Single', 'ort')]:.2f}x | "
                f"{ort_time / tf_time:.2f} |"
            )
    print("\n| configuration | format | export time (s) |\n|---|---|---|")
    for (name, kind), seconds in export_times.items():
        print(f"| {name} | {kind} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
