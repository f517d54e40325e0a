"""Training bridges by distillation from curve networks."""

import json

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_bridge.members import SHARED


def mixup(x, alpha: float):
    """Mixes each input with another of the batch: ``l x + (1 - l) x[p]``.

    ``l ~ Beta(alpha, alpha)`` per input and ``p`` a random permutation.
    ``alpha <= 0`` returns ``x`` unchanged.
    """
    if alpha <= 0:
        return x
    batch = tf.shape(x)[0]
    first = tf.random.gamma([batch], alpha)
    second = tf.random.gamma([batch], alpha)
    lam = first / (first + second)
    lam = tf.reshape(lam, [-1] + [1] * (len(x.shape) - 1))
    partner = tf.gather(x, tf.random.shuffle(tf.range(batch)))
    return lam * x + (1.0 - lam) * partner


def kl_divergence(teacher_logits, student_logits):
    """Mean over the batch of KL(softmax(teacher) || softmax(student))."""
    teacher_log = tf.nn.log_softmax(teacher_logits, axis=-1)
    student_log = tf.nn.log_softmax(student_logits, axis=-1)
    return tf.reduce_mean(
        tf.reduce_sum(tf.exp(teacher_log) * (teacher_log - student_log), -1)
    )


def agreement(teacher_logits, student_logits):
    """Fraction of inputs on which teacher and student pick one class."""
    return tf.reduce_mean(
        tf.cast(
            tf.equal(
                tf.argmax(teacher_logits, -1), tf.argmax(student_logits, -1)
            ),
            "float32",
        )
    )


def _architecture(model):
    """``model``'s config with its own name dropped and each layer name
    replaced by the layer's position, so that clones (whose layers may be
    renamed) compare equal; None where the model cannot describe itself."""
    try:
        config = dict(model.get_config())
    except (NotImplementedError, TypeError, ValueError):
        return None
    config.pop("name", None)
    positions = {}
    for index, layer in enumerate(config.get("layers", [])):
        name = layer.get("name") or layer.get("config", {}).get("name")
        positions.setdefault(name, f"#{index}")

    def canonical(value):
        if isinstance(value, dict):
            return {key: canonical(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [canonical(item) for item in value]
        if isinstance(value, str):
            return positions.get(value, value)
        return value

    return json.dumps(canonical(config), sort_keys=True, default=repr)


class TeacherBank:
    """Teachers that differ in their weight values only, run as one
    network: each call gathers one teacher's weights by index and runs the
    first teacher's layers on them (`keras.layers.Layer.stateless_call`).

    A t-conditioned bridge draws one of its (11) teachers per batch. As
    branches of a `tf.switch_case` every teacher is traced; a bank traces
    one network, and computes the same logits.

    Args:
        teachers: models of one architecture (the same config but for
            names, and the same variables), e.g. clones of one model.

    Example:

    >>> a = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> b = keras.models.clone_model(a)
    >>> bank = TeacherBank.of([a, b])
    >>> x = np.ones((2, 8, 8, 1), "float32")
    >>> bool(np.allclose(bank(1, x), b(x), atol=1e-6))
    True
    """

    def __init__(self, teachers):
        self.runner = teachers[0]
        self._trainable = self._stack(teachers, lambda m: m.trainable_variables)
        self._state = self._stack(teachers, lambda m: m.non_trainable_variables)

    @staticmethod
    def _stack(teachers, variables):
        return [
            tf.convert_to_tensor(np.stack([np.asarray(v) for v in group]))
            for group in zip(*map(variables, teachers), strict=True)
        ]

    @classmethod
    def of(cls, teachers):
        """A bank of ``teachers``, or None where they differ in more than
        their weight values (or cannot describe themselves)."""
        architecture = _architecture(teachers[0])
        if architecture is None:
            return None

        def signature(model):
            return [
                (tuple(v.shape), str(v.dtype))
                for group in (model.trainable_variables,
                              model.non_trainable_variables)
                for v in group
            ]  # fmt: skip

        for model in teachers[1:]:
            if (
                type(model) is not type(teachers[0])
                or _architecture(model) != architecture
                or signature(model) != signature(teachers[0])
            ):
                return None
        return cls(teachers)

    def __call__(self, index, x):
        """The logits of teacher ``index`` (an int tensor) on ``x``."""
        outputs, _ = self.runner.stateless_call(
            [tf.gather(values, index) for values in self._trainable],
            [tf.gather(values, index) for values in self._state],
            x,
            training=False,
        )
        return outputs


class _Frozen:
    """Holds models out of Keras' sight: a model attribute of this type is
    not tracked, so the distiller's weights, checkpoints and
    `trainable_variables` are the heads' (and a shared trunk's) alone, and
    nothing sets ``trainable`` on the (shared) layers of a mode or
    teacher."""

    def __init__(self, trunks, teachers, anchor=None, network=None):
        self.trunks = trunks
        self.teachers = teachers
        self.banks = [
            TeacherBank.of(group) if len(group) > 1 else None
            for group in teachers
        ]
        self.anchor = anchor
        self.network = network


class BridgeDistiller(keras.Model):
    """Trains several bridge heads at once against their teachers.

    Each trunk (a feature extractor of one mode) runs once per step and
    every bridge reading that mode's features shares its output. A
    bridge's teacher is a plain model: the curve network at the bridge's
    point r. A conditioned bridge has a list of teachers at its points and
    draws one per batch. The loss is the sum over bridges of
    KL(teacher || bridge) on a mixup batch that teacher and student both
    see, plus the heads' own losses (e.g. the weight decay of a tail
    rebuilt from an L2-regularised backbone), as Keras' ``compute_loss``
    adds ``self.losses``. Logs: ``loss``, ``kl`` (mean over bridges) and
    ``agreement`` (top-1 agreement with the teacher), with ``val_`` twins
    on validation data.

    Trunks and teachers are used, never trained or changed: only the heads
    are weights of the distiller, so its checkpoints (e.g. of
    `keras.callbacks.BackupAndRestore`) hold the heads alone. A
    ``shared`` trunk is the exception: it is a weight of the distiller,
    trains with every head that reads it (``sources`` `SHARED`), and its
    own logits distil the anchor network given with it.

    Args:
        trunks: dict from mode index to a model from inputs to that mode's
            feature map, or to ``[feature map, logits]`` (needed by heads
            with ``base_logits``).
        bridges: list of dicts with keys ``head`` (a bridge head),
            ``sources`` (tuple of mode indices), ``teachers`` (list of
            models) and ``points`` (list of r, one per teacher).
        mixup_alpha: Beta parameter of mixup; 0 turns mixup off.
        shared: None, or a dict with ``trunk`` (a model from inputs to
            ``[feature map, logits]`` whose layers train: the shared
            trunk and its own tail), ``teacher`` (the model its logits
            imitate, usually the anchor mode) and optionally ``network``
            (the full model the trunk was cut from: `shared_network`).
        augmentation: None, or a layer (e.g. a `keras.Sequential` of
            Keras' random preprocessing layers) applied to each training
            batch before mixup; teacher and student see the same
            augmented inputs.

    Example:

    >>> data = keras_bridge.data.load_digits()
    >>> mode = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> trunk = keras.Model(mode.inputs, mode.get_layer("stage2").output)
    >>> teacher = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> head = keras_bridge.layers.BridgeHead(10, width=8, depth=1)
    >>> distiller = BridgeDistiller({0: trunk}, [{"head": head,
    ...     "sources": (0,), "teachers": [teacher], "points": [0.5]}])
    >>> distiller.compile(optimizer="adam")
    >>> history = distiller.fit(data.train, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['agreement', 'kl', 'loss']
    """

    def __init__(
        self,
        trunks,
        bridges,
        mixup_alpha=0.4,
        shared=None,
        augmentation=None,
        **kw,
    ):
        super().__init__(**kw)
        self.heads = [spec["head"] for spec in bridges]
        self._sources = [tuple(spec["sources"]) for spec in bridges]
        self._points = [tuple(spec["points"]) for spec in bridges]
        self.mixup_alpha = float(mixup_alpha)
        self._trunk_keys = sorted(trunks)
        self.augmentation = augmentation
        self.shared_trunk = None if shared is None else shared["trunk"]
        every = dict(trunks)
        if shared is not None:
            every[SHARED] = shared["trunk"]
        for spec in bridges:
            for i in spec["sources"] if spec["head"].base_logits else ():
                if (
                    not isinstance(every[i].outputs, (list, tuple))
                    or len(every[i].outputs) != 2
                ):
                    raise ValueError(
                        f"The head {spec['head'].name!r} has `base_logits`: "
                        f"trunk {i} must return [feature map, logits]."
                    )
        self._frozen = _Frozen(
            [trunks[k] for k in self._trunk_keys],
            [list(spec["teachers"]) for spec in bridges],
            None if shared is None else shared["teacher"],
            None if shared is None else shared.get("network"),
        )
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.agreement_tracker = keras.metrics.Mean(name="agreement")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def shared_network(self):
        """The full network the shared trunk was cut from (it shares its
        layers), if it was given; else None."""
        return self._frozen.network

    @property
    def metrics(self):
        return [self.loss_tracker, self.kl_tracker, self.agreement_tracker]

    def _features(self, x, training=False):
        """Feature maps and (where a trunk returns them) logits, by mode
        (and `SHARED`)."""
        features, logits = {}, {}
        for key, trunk in zip(self._trunk_keys, self._frozen.trunks):
            outputs = trunk(x, training=False)
            if isinstance(outputs, (list, tuple)):
                features[key], logits[key] = outputs
            else:
                features[key] = outputs
        if self.shared_trunk is not None:
            features[SHARED], logits[SHARED] = self.shared_trunk(
                x, training=training
            )
        return features, logits

    def _student(self, index, features, logits, r, training):
        sources = self._sources[index]
        return self.heads[index].apply(
            [features[i] for i in sources],
            t=r,
            logits=[logits.get(i) for i in sources],
            training=training,
        )

    def _teacher(self, index, x):
        teachers = self._frozen.teachers[index]
        points = self._points[index]
        if len(teachers) == 1:
            return teachers[0](x, training=False), points[0]
        draw = tf.random.uniform((), 0, len(teachers), dtype="int32")
        bank = self._frozen.banks[index]
        if bank is not None:
            logits = bank(draw, x)
        else:
            logits = tf.switch_case(
                draw,
                [(lambda m=model: m(x, training=False)) for model in teachers],
            )
        r = tf.gather(tf.constant(points, "float32"), draw)
        return logits, r

    def _distill(self, x, training):
        features, logits = self._features(x, training)
        kls, agreements = [], []
        if self.shared_trunk is not None:
            # The trunk's own tail keeps imitating the anchor, so the trunk
            # stays a full network while it learns for every head.
            anchor = tf.stop_gradient(self._frozen.anchor(x, training=False))
            kls.append(kl_divergence(anchor, logits[SHARED]))
        for index in range(len(self.heads)):
            teacher_logits, r = self._teacher(index, x)
            teacher_logits = tf.stop_gradient(teacher_logits)
            student = self._student(index, features, logits, r, training)
            kls.append(kl_divergence(teacher_logits, student))
            agreements.append(agreement(teacher_logits, student))
        bridge_kls = kls[len(kls) - len(self.heads) :]
        return (
            tf.add_n(kls),
            tf.reduce_mean(bridge_kls),
            tf.reduce_mean(agreements),
        )

    def build(self, input_shape):
        """Builds the augmentation and the heads for inputs of
        ``input_shape``: the heads' input shapes are the trunks' feature
        maps, so `call` runs once on one all-zero input of the trunks'
        dtype (inference mode: no statistics move). With an unknown size
        other than the batch's, or several inputs, the heads build on
        their first call instead."""
        if self.augmentation is not None and not self.augmentation.built:
            self.augmentation.build(input_shape)
        trunk = (self._frozen.trunks or [self.shared_trunk])[0]
        shape = (1, *input_shape[1:])
        if len(trunk.inputs) == 1 and all(
            isinstance(size, int) for size in shape
        ):
            self.call(ops.zeros(shape, trunk.inputs[0].dtype), training=False)

    def call(self, x, training=False):
        features, logits = self._features(x, training)
        outputs = []
        for index, points in enumerate(self._points):
            r = points[len(points) // 2]
            outputs.append(self._student(index, features, logits, r, training))
        return outputs

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        if self.augmentation is not None:
            x = self.augmentation(x, training=True)
        x = mixup(x, self.mixup_alpha)
        with tf.GradientTape() as tape:
            loss, kl, agree = self._distill(x, training=True)
            if self.losses:
                loss = loss + tf.add_n(self.losses)
            # Replicas' gradients are summed: scale so they average.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = loss / replicas
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply(gradients, variables)
        return self._update(loss, kl, agree)

    def test_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        loss, kl, agree = self._distill(x, training=False)
        return self._update(loss, kl, agree)

    def _update(self, loss, kl, agree):
        self.loss_tracker.update_state(loss)
        self.kl_tracker.update_state(kl)
        self.agreement_tracker.update_state(agree)
        return {m.name: m.result() for m in self.metrics}


def teacher_fidelity(teacher_logits, student_logits) -> dict:
    """Agreement and KL of a student with its teacher, as floats."""
    teacher_logits = ops.convert_to_tensor(teacher_logits, "float32")
    student_logits = ops.convert_to_tensor(student_logits, "float32")
    return {
        "agreement": float(agreement(teacher_logits, student_logits)),
        "kl": float(kl_divergence(teacher_logits, student_logits)),
    }
