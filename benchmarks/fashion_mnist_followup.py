"""Follow-up on a saved Fashion-MNIST ensemble: OOD detection, member
selection, and bridge fidelity on training vs test images.

Reads the ensemble that `benchmarks/fashion_mnist.py` saved and prints:

- the report with out-of-distribution columns, for two OOD sets: the
  digits (8x8, resized to 28x28) and Fashion-MNIST test images flipped
  upside down;
- the members `select_members` keeps on the validation data;
- each bridge's top-1 agreement with its teacher on 10,000 training images
  and on the test images: a gap says the head overfits, equal figures say
  it lacks capacity or training. Next to it, the agreement of the modes
  the bridge reads with the same teacher: what a bridge that only copied
  its mode would score, so the difference is what it learned of the
  teacher.

Usage: python benchmarks/fashion_mnist_followup.py ENSEMBLE.keras
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_bridge as kb  # noqa: E402


def digits_28(count):
    x, _ = kb.data.to_numpy(kb.data.load_digits().test)
    return tf.image.resize(x, (28, 28)).numpy()[:count]


def main(path):
    ens = kb.BridgeEnsemble.load(path)
    data = kb.data.load_fashion_mnist()
    x_test, _ = kb.data.to_numpy(data.test)
    for name, ood in (
        ("digits resized to 28x28", digits_28(360)),
        ("Fashion-MNIST test, flipped upside down", x_test[:, ::-1]),
    ):
        report = ens.evaluate(
            data.test, calibration_data=data.validation, ood_data=ood
        )
        print(f"\n## OOD: {name}\n")
        print(report.to_markdown())
    print("\n## select_members on validation\n")
    print(ens.select_members(data.validation))
    print("\n## Bridge agreement with its teacher: train vs test\n")
    x_train, _ = kb.data.to_numpy(data.train.take(79))
    for member, _ in ens.bridges.items():
        teacher = ens.point_model(member.pair, member.t)
        names = [member.name] + [
            kb.members.source_member(i).name for i in member.sources
        ]
        for split, x in (("train", x_train), ("test", x_test)):
            votes = ens.predict(x, members=names)["member_probabilities"]
            agree = np.mean(
                votes.argmax(-1)
                == teacher.predict(x, verbose=0).argmax(1)[:, None],
                axis=0,
            )
            modes = ", ".join(
                f"{name} {value:.4f}"
                for name, value in zip(names[1:], agree[1:])
            )
            print(f"{member.name} {split}: {agree[0]:.4f} ({modes})")


if __name__ == "__main__":
    main(sys.argv[1])
