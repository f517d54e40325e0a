"""Benchmark: one bridge, several training recipes, on a saved ensemble.

Reads an ensemble that `benchmarks/fashion_mnist.py` saved and trains one
Type I bridge from the anchor to the anchor's first curve midpoint (the
same teacher for every recipe), once per recipe, for ``--epochs`` epochs.
Prints, per recipe, the bridge's top-1 agreement with its teacher and its
accuracy on the 10,000 test images, and the calibrated NLL (temperature
fitted on validation) of "Single + 1 Type I", next to the anchor's own.

A recipe is a ``:``-separated list of options:

- ``scratch`` or ``correction``: the head predicts logits from the
  features alone, or a correction added to the anchor's logits
  (``base_logits``, the default since this benchmark);
- ``lr=X``: peak learning rate (cosine decay to 0);
- ``mix=X``: mixup alpha (default 0.4);
- ``label=X``: adds X times the cross-entropy with the (mixed) labels;
- ``T=X``: distils at temperature X (KL of softened distributions, x T^2);
- ``layer=NAME``: reads the feature map of layer NAME instead of the
  ensemble's ``feature_layer`` (the head is sized to the same budget);
- ``focus=X`` (with ``correction``): weighs each input's KL by
  ``1 + X * d / mean(d)``, d the KL from the teacher to the anchor, so the
  head learns most where the teacher differs from the anchor;
- ``base=X`` (with ``correction``): the head corrects X times the
  anchor's logits instead of the logits themselves
  (``base_logits=X``);
- ``r=X``: the teacher is the point r = X of the same curve instead of
  its midpoint (r = 1 is the other mode itself).

Each row also gives the teacher's own test accuracy and the calibrated
NLL of "Single + teacher" at full cost: what a perfect bridge would give.

Needs the Debian package ``dataset-fashion-mnist``.

Usage: python benchmarks/bridge_recipes.py ENSEMBLE.keras \\
           scratch:lr=2e-3 correction:lr=6e-3 [--epochs 10]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_bridge as kb  # noqa: E402
from keras_bridge import bridges, distillation, training  # noqa: E402
from keras_bridge.graph import feature_model  # noqa: E402


class RecipeDistiller(distillation.BridgeDistiller):
    """`BridgeDistiller` with an optional label term and temperature."""

    def __init__(self, label, temperature, focus, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.label, self.temperature, self.focus = label, temperature, focus

    def train_step(self, data):
        x, y = data
        y = tf.one_hot(tf.cast(y, "int32"), self.heads[0].num_classes)
        batch = tf.shape(x)[0]
        first = tf.random.gamma([batch], self.mixup_alpha)
        lam = first / (first + tf.random.gamma([batch], self.mixup_alpha))
        partner = tf.random.shuffle(tf.range(batch))
        lam_x = tf.reshape(lam, [-1] + [1] * (len(x.shape) - 1))
        x = lam_x * x + (1 - lam_x) * tf.gather(x, partner)
        y = lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, partner)
        t = self.temperature
        with tf.GradientTape() as tape:
            features, logits = self._features(x)
            teacher, _ = self._teacher(0, x)
            student = self._student(0, features, logits, None, True)
            if self.focus:
                anchor = logits[self._sources[0][0]]
                log_t = tf.nn.log_softmax(teacher, -1)
                per = tf.reduce_sum(
                    tf.exp(log_t) * (log_t - tf.nn.log_softmax(student, -1)),
                    -1,
                )
                gap = tf.reduce_sum(
                    tf.exp(log_t) * (log_t - tf.nn.log_softmax(anchor, -1)),
                    -1,
                )
                weight = 1 + self.focus * gap / (tf.reduce_mean(gap) + 1e-8)
                kl = tf.reduce_mean(tf.stop_gradient(weight) * per)
            else:
                kl = distillation.kl_divergence(teacher / t, student / t)
                kl = kl * t**2
            loss = kl + self.label * tf.reduce_mean(
                keras.losses.categorical_crossentropy(
                    y, student, from_logits=True
                )
            )
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        agree = distillation.agreement(teacher, student)
        return self._update(loss, kl, agree)


def calibrated_nll(val, test, y_val, y_test):
    scaled = kb.metrics.temperature_scale(
        test, kb.metrics.fit_temperature(val, y_val)
    )
    picked = scaled[np.arange(len(y_test)), y_test]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1))))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ensemble")
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)

    ens = kb.BridgeEnsemble.load(args.ensemble)
    data = kb.data.load_fashion_mnist()
    anchor = ens.modes[ens.anchor]
    pair = sorted(p for p in ens.curves if p[0] == ens.anchor)[0]
    x_val, y_val = kb.data.to_numpy(data.validation)
    x_test, y_test = kb.data.to_numpy(data.test)

    def softmax(z):
        return tf.nn.softmax(z).numpy()

    single_val = softmax(anchor.predict(x_val, verbose=0))
    single_test = softmax(anchor.predict(x_test, verbose=0))
    teachers = {}

    def teacher_at(r):
        if r not in teachers:
            # The saved midpoint is the ensemble's own teacher; other
            # interior points get BatchNorm statistics from training data.
            fresh = 0 < r < 1 and r != 0.5
            model = ens.point_model(
                pair, r, bn_data=data.train if fresh else None
            )
            val = softmax(model.predict(x_val, verbose=0))
            test = softmax(model.predict(x_test, verbose=0))
            both = calibrated_nll(
                (single_val + val) / 2, (single_test + test) / 2, y_val,
                y_test,
            )  # fmt: skip
            summary = (
                f"{np.mean(test.argmax(1) == y_test):.4f} | "
                f"{np.mean(test.argmax(1) == single_test.argmax(1)):.4f} | "
                f"{both:.4f}"
            )
            teachers[r] = model, test.argmax(1), summary
        return teachers[r]

    print(
        f"anchor mode {ens.anchor}, teachers: curve {pair}; Single cNLL "
        f"{calibrated_nll(single_val, single_test, y_val, y_test):.4f}\n"
    )
    print(
        "| recipe | head | agreement | accuracy | Single + 1 cNLL | s "
        "| teacher: accuracy | agreement with the anchor "
        "| Single + teacher cNLL |\n|---|---|---|---|---|---|---|---|---|"
    )
    steps = sum(1 for _ in data.train)
    for recipe in args.recipes:
        parts = recipe.split(":")
        options = dict(p.split("=") for p in parts if "=" in p)
        correction = "correction" in parts
        layer = options.get("layer", ens.feature_layer)
        base = float(options.get("base", 1)) if correction else False
        head, _, cost, what = bridges.size_head(
            anchor, layer, 1, False, {"base_logits": base}, None, name="head"
        )
        index = [item.name for item in anchor.layers].index(layer)
        trunk = feature_model(anchor, index, correction)
        r = float(options.get("r", 0.5))
        teacher, teacher_test, summary = teacher_at(r)
        spec = {
            "head": head,
            "sources": (ens.anchor,),
            "teachers": [teacher],
            "points": [r],
        }
        distiller = RecipeDistiller(
            float(options.get("label", 0)),
            float(options.get("T", 1)),
            float(options.get("focus", 0)),
            {ens.anchor: trunk},
            [spec],
            mixup_alpha=float(options.get("mix", 0.4)),
        )
        distiller.compile(
            optimizer=training.make_optimizer(
                None, args.epochs, steps, float(options.get("lr", 6e-3))
            ),
            jit_compile=False,
        )
        start = time.perf_counter()
        distiller.fit(data.train, epochs=args.epochs, verbose=0)
        seconds = time.perf_counter() - start
        val = softmax(distiller.predict(x_val, verbose=0)[0])
        test = softmax(distiller.predict(x_test, verbose=0)[0])
        cnll = calibrated_nll(
            (single_val + val) / 2, (single_test + test) / 2, y_val, y_test
        )
        print(
            f"| {recipe} | {what}, {cost:.3f}x | "
            f"{np.mean(test.argmax(1) == teacher_test):.4f} | "
            f"{np.mean(test.argmax(1) == y_test):.4f} | {cnll:.4f} | "
            f"{seconds:.0f} | {summary} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
