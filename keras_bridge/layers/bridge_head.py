"""`BridgeHead`: a small network from feature maps to a member's logits."""

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_bridge")
class BridgeHead(keras.layers.Layer):
    """Predicts a curve network's logits from endpoint feature maps.

    A Type I head reads one mode's feature map; a Type II head reads two,
    concatenated on the channel axis. The head is either

    - ``tail``: a functional model from the (concatenated) feature map to
      logits, usually the backbone's own layers after the feature layer
      rebuilt at reduced width (`keras_bridge.splitting.slim_tail`); or
    - a residual convolutional head, when ``tail`` is None: a 1x1
      convolution to ``width`` channels, ``depth`` residual blocks of two
      3x3 (or 3) convolutions with BatchNormalization, global average
      pooling and a dense classifier. It works on 2-D (image) and 1-D
      (sequence) feature maps.

    With ``conditioned=True`` the head also takes the curve point r and
    appends it to the feature map as one constant channel, so one head can
    imitate the curve at any point.

    Args:
        num_classes: number of output logits.
        width: channels of the residual head (ignored with ``tail``).
        depth: residual blocks of the residual head (ignored with
            ``tail``).
        tail: optional functional `keras.Model` from the feature map (with
            one more channel when conditioned) to logits.
        conditioned: whether the head takes r as an input.
        **kwargs: forwarded to `keras.layers.Layer`.

    Call arguments:
        features: a feature map ``(batch, *spatial, channels)``, or a list
            of two for a Type II head.
        r: the curve point, a float or a ``(batch, 1)`` tensor; required
            when ``conditioned``.
        training: whether BatchNormalization uses batch statistics.

    Returns:
        Logits of shape ``(batch, num_classes)``.

    Example:

    >>> head = BridgeHead(10, width=16, depth=1)
    >>> head(keras.ops.ones((2, 4, 4, 8))).shape
    (2, 10)
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 64,
        depth: int = 2,
        tail=None,
        conditioned: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_classes) < 1 or int(width) < 1 or int(depth) < 0:
            raise ValueError(
                "`num_classes` and `width` must be >= 1 and `depth` >= 0; "
                f"received num_classes={num_classes}, width={width}, "
                f"depth={depth}."
            )
        if isinstance(tail, dict):
            tail = keras.saving.deserialize_keras_object(tail)
        self.num_classes = int(num_classes)
        self.width = int(width)
        self.depth = int(depth)
        self.tail = tail
        self.conditioned = bool(conditioned)

    def build(self, input_shape):
        shapes = input_shape
        if isinstance(shapes, (list, tuple)) and isinstance(
            shapes[0], (list, tuple)
        ):
            channels = sum(int(s[-1]) for s in shapes)
            shape = tuple(shapes[0][:-1]) + (channels,)
        else:
            shape = tuple(shapes)
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
        channels = shape[-1] + (1 if self.conditioned else 0)
        if self.tail is not None:
            expected = self.tail.inputs[0].shape[-1]
            if expected != channels:
                raise ValueError(
                    f"`tail` must take {channels} input channels; its input "
                    f"has {expected}."
                )
            return
        self._rank = len(shape) - 2
        conv = layers.Conv2D if self._rank == 2 else layers.Conv1D
        self._stem = conv(self.width, 1, use_bias=False, name="stem")
        self._stem_bn = layers.BatchNormalization(name="stem_bn")
        self._blocks = []
        for index in range(self.depth):
            block = [
                conv(
                    self.width,
                    3,
                    padding="same",
                    use_bias=False,
                    name=f"block{index}_conv1",
                ),
                layers.BatchNormalization(name=f"block{index}_bn1"),
                conv(
                    self.width,
                    3,
                    padding="same",
                    use_bias=False,
                    name=f"block{index}_conv2",
                ),
                layers.BatchNormalization(name=f"block{index}_bn2"),
            ]
            self._blocks.append(block)
        self._classifier = layers.Dense(self.num_classes, name="logits")
        inner = tuple(shape[:-1]) + (channels,)
        self._stem.build(inner)
        inner = inner[:-1] + (self.width,)
        self._stem_bn.build(inner)
        for conv1, bn1, conv2, bn2 in self._blocks:
            conv1.build(inner)
            bn1.build(inner)
            conv2.build(inner)
            bn2.build(inner)
        self._classifier.build((None, self.width))

    def call(self, features, r=None, training=None):
        if isinstance(features, (list, tuple)):
            x = ops.concatenate(list(features), axis=-1)
        else:
            x = features
        if self.conditioned:
            if r is None:
                raise ValueError("`r` is required by a conditioned head.")
            r = ops.convert_to_tensor(r, dtype=x.dtype)
            r = ops.reshape(r, (-1,) + (1,) * (len(x.shape) - 1))
            x = ops.concatenate([x, ops.ones_like(x[..., :1]) * r], axis=-1)
        if self.tail is not None:
            return self.tail(x, training=training)
        x = ops.relu(self._stem_bn(self._stem(x), training=training))
        for conv1, bn1, conv2, bn2 in self._blocks:
            y = ops.relu(bn1(conv1(x), training=training))
            y = bn2(conv2(y), training=training)
            x = ops.relu(x + y)
        x = ops.mean(x, axis=tuple(range(1, self._rank + 1)))
        return self._classifier(x)

    def compute_output_shape(self, features_shape, r_shape=None):
        shapes = features_shape
        if isinstance(shapes, (list, tuple)) and isinstance(
            shapes[0], (list, tuple)
        ):
            shapes = shapes[0]
        return (shapes[0], self.num_classes)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            width=self.width,
            depth=self.depth,
            tail=(
                None
                if self.tail is None
                else keras.saving.serialize_keras_object(self.tail)
            ),
            conditioned=self.conditioned,
        )
        return config
