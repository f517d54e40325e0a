"""Bridge heads: small networks from feature maps to a member's logits.

`BaseBridgeHead` owns the calling convention shared by every head (one
feature map or a list of two, concatenated on the channel axis; the
position t on the curve appended as one constant channel when the head is
conditioned).
Each subclass is one architecture: `BridgeHead` (a residual conv head) and
`TailHead` (the backbone's own tail, rebuilt). A head with
``base_logits=True`` predicts a correction to the (mean) logits of the
modes it reads rather than logits from scratch; a number between 0 and 1
corrects that fraction of them.
"""

import numbers

import keras
from keras import layers, ops

from keras_bridge.arguments import positive_int


def logits_weight(value, name) -> float:
    """``value`` (True, False or a number in [0, 1]) as a float, or a
    ValueError that names the argument ``name``."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real) and 0 <= value <= 1:
        return float(value)
    raise ValueError(
        f"`{name}` must be True, False or a number in [0, 1]; received "
        f"{name}={value!r}."
    )


def _joined_shape(input_shape) -> tuple:
    """The shape after concatenating a list of feature maps on channels."""
    if isinstance(input_shape, (list, tuple)) and isinstance(
        input_shape[0], (list, tuple)
    ):
        channels = sum(int(s[-1]) for s in input_shape)
        return tuple(input_shape[0][:-1]) + (channels,)
    return tuple(input_shape)


class BaseBridgeHead(keras.layers.Layer):
    """The calling convention of every bridge head.

    Subclasses implement ``build_head(shape)`` (``shape``: the joined
    feature map's shape, t channel included) and ``head_call(x, training)``.

    Args:
        num_classes: number of output logits.
        conditioned: whether the head takes the curve position ``t``.
        base_logits: whether the head's output is added to the mean logits
            of the modes it reads (passed as ``logits``), so it learns the
            teacher's difference from them. The mode's logits are computed
            anyway when the mode is a member, so this costs one addition.
            A number in [0, 1] adds that fraction of the logits: True is
            1, False is 0. A smaller fraction leaves more of the
            prediction to the head, away from the mode's own.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        features: a feature map ``(batch, *spatial, channels)``, or a list
            of two for a Type II head.
        t: the position on the curve, a float in [0, 1] or a
            ``(batch, 1)`` tensor; required when ``conditioned``, refused
            otherwise.
        logits: the logits of the modes whose features the head reads,
            ``(batch, num_classes)`` or a list of them; required when
            ``base_logits``, refused otherwise. No gradient flows into
            them.
        training: whether BatchNormalization uses batch statistics.
    """

    def __init__(
        self,
        num_classes: int,
        conditioned: bool = False,
        base_logits: bool | float = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = positive_int(num_classes, "num_classes")
        self.conditioned = bool(conditioned)
        self.base_logits = logits_weight(base_logits, "base_logits")

    def build(self, input_shape):
        shape = _joined_shape(input_shape)
        if len(shape) < 3:
            raise ValueError(
                "`features` must be a feature map with spatial axes, "
                "(batch, steps, channels) or (batch, height, width, "
                f"channels); received shape {shape}. Choose a "
                "`feature_layer` before the global pooling."
            )
        if len(shape) > 4:
            raise ValueError(
                f"`features` must have 1 or 2 spatial axes; received {shape}."
            )
        self.build_head(shape[:-1] + (shape[-1] + int(self.conditioned),))
        self.built = True

    def call(self, features, t=None, logits=None, training=None):
        if isinstance(features, (list, tuple)):
            x = ops.concatenate(list(features), axis=-1)
        else:
            x = features
        if self.conditioned:
            if t is None:
                raise ValueError("`t` is required by a conditioned head.")
            t = ops.convert_to_tensor(t, dtype=x.dtype)
            t = ops.reshape(t, (-1,) + (1,) * (len(x.shape) - 1))
            x = ops.concatenate([x, ops.ones_like(x[..., :1]) * t], axis=-1)
        elif t is not None:
            raise ValueError(
                "`t` is only taken by a conditioned head (`conditioned=True`)."
            )
        outputs = self.head_call(x, training=training)
        if not self.base_logits:
            if logits is not None:
                raise ValueError(
                    "`logits` are only taken by a head with `base_logits=True`."
                )
            return outputs
        if logits is None:
            raise ValueError(
                "`logits` (of the modes the head reads) are required by a "
                "head with `base_logits=True`."
            )
        logits = list(logits) if isinstance(logits, (list, tuple)) else [logits]
        maps = len(features) if isinstance(features, (list, tuple)) else 1
        if len(logits) != maps:
            raise ValueError(
                f"`logits` must hold one tensor per feature map ({maps}); "
                f"received {len(logits)}."
            )
        logits = [ops.cast(z, outputs.dtype) for z in logits]
        base = logits[0] if maps == 1 else ops.mean(ops.stack(logits), 0)
        return outputs + self.base_logits * ops.stop_gradient(base)

    def apply(self, maps, t=None, logits=None, training=None):
        """Calls the head on ``maps`` (a list, one per mode read), passing
        ``t`` and ``logits`` only where the head takes them: the one way
        the ensemble calls its heads.

        Example:

        >>> head = BridgeHead(10, width=8, depth=1)
        >>> tuple(head.apply([keras.ops.ones((2, 4, 4, 8))], t=0.5,
        ...     logits=[keras.ops.ones((2, 10))]).shape)
        (2, 10)
        """
        return self(
            maps if len(maps) > 1 else maps[0],
            t=t if self.conditioned else None,
            logits=logits if self.base_logits else None,
            training=training,
        )

    def compute_output_shape(
        self, features_shape, t_shape=None, logits_shape=None
    ):
        return (_joined_shape(features_shape)[0], self.num_classes)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "conditioned": self.conditioned,
            "base_logits": self.base_logits,
        }


@keras.saving.register_keras_serializable(package="keras_bridge")
class BridgeHead(BaseBridgeHead):
    """A residual convolutional bridge head.

    A 1x1 convolution to ``width`` channels, ``depth`` residual blocks of
    two 3x3 (or 3) convolutions with BatchNormalization, global average
    pooling and a dense classifier. It works on 2-D (image) and 1-D
    (sequence) feature maps, of any backbone.

    Args:
        num_classes: number of output logits.
        width: channels of the head.
        depth: number of residual blocks.
        conditioned: whether the head also takes the curve position t.
        base_logits: whether (or which fraction of) the logits of the
            modes read are added to the output (see `BaseBridgeHead`).
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments: see `BaseBridgeHead` (``features``, ``t``,
    ``logits``, ``training``).

    Returns:
        Logits of shape ``(batch, num_classes)``.

    Example:

    >>> head = BridgeHead(10, width=16, depth=1)
    >>> tuple(head(keras.ops.ones((2, 4, 4, 8))).shape)
    (2, 10)

    A head that corrects the logits of the mode it reads:

    >>> head = BridgeHead(10, width=16, depth=1, base_logits=True)
    >>> logits = keras.ops.ones((2, 10))
    >>> tuple(head(keras.ops.ones((2, 4, 4, 8)), logits=logits).shape)
    (2, 10)
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 64,
        depth: int = 2,
        conditioned: bool = False,
        base_logits: bool | float = False,
        **kwargs,
    ):
        super().__init__(
            num_classes,
            conditioned=conditioned,
            base_logits=base_logits,
            **kwargs,
        )
        self.width = positive_int(width, "width")
        self.depth = positive_int(depth, "depth", minimum=0)

    def build_head(self, shape):
        # The convolutions' rank follows the feature map's, known only here.
        self._rank = len(shape) - 2
        conv = layers.Conv2D if self._rank == 2 else layers.Conv1D

        def conv_bn(name, kernel):
            return (
                conv(
                    self.width,
                    kernel,
                    padding="same",
                    use_bias=False,
                    name=f"{name}_conv",
                ),
                layers.BatchNormalization(name=f"{name}_bn"),
            )

        self._stem = conv_bn("stem", 1)
        self._blocks = [
            (conv_bn(f"block{i}_1", 3), conv_bn(f"block{i}_2", 3))
            for i in range(self.depth)
        ]
        self._classifier = layers.Dense(self.num_classes, name="logits")
        inner = tuple(shape)
        for conv_layer, bn in [self._stem, *sum(self._blocks, ())]:
            conv_layer.build(inner)
            inner = inner[:-1] + (self.width,)
            bn.build(inner)
        self._classifier.build((None, self.width))

    def head_call(self, x, training=None):
        def apply(pair, x):
            return pair[1](pair[0](x), training=training)

        x = ops.relu(apply(self._stem, x))
        for first, second in self._blocks:
            x = ops.relu(x + apply(second, ops.relu(apply(first, x))))
        x = ops.mean(x, axis=tuple(range(1, self._rank + 1)))
        return self._classifier(x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "width": self.width,
            "depth": self.depth,
        }


@keras.saving.register_keras_serializable(package="keras_bridge")
class TailHead(BaseBridgeHead):
    """A bridge head that is a rebuilt tail of the backbone.

    ``tail`` is a functional model from the (joined) feature map to
    logits, usually the backbone's own layers after the feature layer at
    reduced width (`keras_bridge.backbone.slim_tail`).

    Args:
        num_classes: number of output logits.
        tail: functional `keras.Model` from the feature map (one more
            channel when conditioned) to ``num_classes`` logits.
        conditioned: whether the head also takes the curve position t.
        base_logits: whether (or which fraction of) the logits of the
            modes read are added to the output (see `BaseBridgeHead`).
        **kwargs: forwarded to `keras.layers.Layer`.

    Example:

    >>> backbone = keras_bridge.models.resnet((8, 8, 1), 10, depth=8)
    >>> tail = keras_bridge.backbone.slim_tail(backbone, "stage2", 32)
    >>> tuple(TailHead(10, tail)(keras.ops.ones((2, 4, 4, 32))).shape)
    (2, 10)
    """

    def __init__(
        self,
        num_classes: int,
        tail,
        conditioned=False,
        base_logits=False,
        **kwargs,
    ):
        super().__init__(
            num_classes,
            conditioned=conditioned,
            base_logits=base_logits,
            **kwargs,
        )
        if isinstance(tail, dict):
            tail = keras.saving.deserialize_keras_object(tail)
        if not isinstance(tail, keras.Model):
            raise ValueError(
                "`tail` must be a functional `keras.Model` from the feature "
                f"map to logits; received {type(tail).__name__}."
            )
        self.tail = tail

    def build_head(self, shape):
        expected = self.tail.inputs[0].shape[-1]
        if expected != shape[-1]:
            raise ValueError(
                f"`tail` must take {shape[-1]} input channels; its input "
                f"has {expected}."
            )

    def head_call(self, x, training=None):
        return self.tail(x, training=training)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "tail": keras.saving.serialize_keras_object(self.tail),
        }
