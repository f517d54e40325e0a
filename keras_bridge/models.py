"""Reference backbones."""

import keras
from keras import layers


def resnet(
    input_shape,
    num_classes: int,
    depth: int = 32,
    width: float = 1.0,
    weight_decay: float = 1e-4,
    name: str | None = None,
) -> keras.Model:
    """CIFAR-style ResNet (He et al., 2016): ResNet-``depth`` x ``width``.

    Three stages of ``(depth - 2) / 6`` basic residual blocks with
    ``16 * width``, ``32 * width`` and ``64 * width`` channels; stages 2 and
    3 halve the spatial size. Then global average pooling and a dense layer
    that outputs logits (no softmax). The stage outputs are named
    ``"stage1"``, ``"stage2"`` and ``"stage3"`` so that one can be given as
    a `BridgeEnsemble`'s ``feature_layer``; ``"stage2"`` is the default
    split.

    Args:
        input_shape: shape of one input, channels last, e.g. ``(32, 32, 3)``.
        num_classes: number of classes.
        depth: ``6 n + 2``: 8, 14, 20, 32, 44, 56, 110 ...
        width: channel multiplier; ``width=4`` is the literature's
            ResNet-32x4.
        weight_decay: L2 penalty on convolution and dense kernels.
        name: model name; defaults to ``"resnet{depth}x{width}"``.

    Returns:
        A functional `keras.Model` from images to logits.

    Example:

    >>> model = resnet((8, 8, 1), num_classes=10, depth=8, width=0.5)
    >>> model.get_layer("stage2").output.shape
    (None, 4, 4, 16)
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"`depth` must be 6 n + 2 with n >= 1 (8, 14, 20, 32, ...); "
            f"received depth={depth!r}."
        )
    if width <= 0:
        raise ValueError(f"`width` must be positive; received width={width}.")
    blocks = (depth - 2) // 6
    regularizer = keras.regularizers.L2(weight_decay) if weight_decay else None
    conv_args = dict(
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=regularizer,
    )
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(_channels(16, width), 3, name="stem_conv", **conv_args)(
        inputs
    )
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage in range(3):
        filters = _channels(16 * 2**stage, width)
        for block in range(blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            prefix = f"stage{stage + 1}_block{block + 1}"
            last = block == blocks - 1
            x = _basic_block(
                x,
                filters,
                strides,
                prefix,
                conv_args,
                output_name=f"stage{stage + 1}" if last else None,
            )
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(
        num_classes, kernel_regularizer=regularizer, name="logits"
    )(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}x{width:g}")


def _channels(base: int, width: float) -> int:
    return max(1, int(round(base * width)))


def _basic_block(x, filters, strides, prefix, conv_args, output_name=None):
    shortcut = x
    y = layers.Conv2D(
        filters, 3, strides=strides, name=f"{prefix}_conv1", **conv_args
    )(x)
    y = layers.BatchNormalization(name=f"{prefix}_bn1")(y)
    y = layers.ReLU(name=f"{prefix}_relu1")(y)
    y = layers.Conv2D(filters, 3, name=f"{prefix}_conv2", **conv_args)(y)
    y = layers.BatchNormalization(name=f"{prefix}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(
            filters,
            1,
            strides=strides,
            name=f"{prefix}_proj",
            **{**conv_args, "padding": "valid"},
        )(x)
        shortcut = layers.BatchNormalization(name=f"{prefix}_proj_bn")(shortcut)
    y = layers.Add(name=f"{prefix}_add")([y, shortcut])
    return layers.ReLU(name=output_name or f"{prefix}_out")(y)


def plain_cnn(
    input_shape,
    num_classes: int,
    width: float = 1.0,
    name: str | None = None,
) -> keras.Model:
    """A plain (VGG-style, non-residual) CNN.

    Three stages of two 3x3 convolutions with BatchNormalization and ReLU,
    with ``32 * width``, ``64 * width`` and ``128 * width`` channels;
    max pooling halves the spatial size after stages 1 and 2. Then global
    average pooling and a dense layer that outputs logits. The stage
    outputs are named ``"stage1"`` .. ``"stage3"``.

    Args:
        input_shape: shape of one input, channels last.
        num_classes: number of classes.
        width: channel multiplier.
        name: model name; defaults to ``"plain_cnn_x{width}"``.

    Returns:
        A functional `keras.Model` from images to logits.

    Example:

    >>> model = plain_cnn((28, 28, 1), num_classes=10, width=0.5)
    >>> model.get_layer("stage2").output.shape
    (None, 14, 14, 32)
    """
    if width <= 0:
        raise ValueError(f"`width` must be positive; received width={width}.")
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for stage, filters in enumerate((32, 64, 128), start=1):
        if stage > 1:
            x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
        for index in (1, 2):
            prefix = f"stage{stage}_conv{index}"
            x = layers.Conv2D(
                _channels(filters, width),
                3,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                name=prefix,
            )(x)
            x = layers.BatchNormalization(name=f"{prefix}_bn")(x)
            x = layers.ReLU(name=f"stage{stage}" if index == 2 else None)(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"plain_cnn_x{width:g}")


def _squeeze_excite(x, prefix: str):
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}_se_pool")(
        x
    )
    s = layers.Conv2D(
        max(8, channels // 4), 1, activation="relu", name=f"{prefix}_se_reduce"
    )(s)
    s = layers.Conv2D(channels, 1, name=f"{prefix}_se_expand")(s)
    s = layers.Activation("hard_sigmoid", name=f"{prefix}_se_gate")(s)
    return layers.Multiply(name=f"{prefix}_se_scale")([x, s])


def _inverted_residual(x, expand, filters, strides, use_se, prefix):
    """MobileNetV3's block: 1x1 expansion, 3x3 depthwise, optional
    squeeze-and-excite, 1x1 linear projection, identity shortcut."""
    y = layers.Conv2D(expand, 1, use_bias=False, name=f"{prefix}_expand")(x)
    y = layers.BatchNormalization(name=f"{prefix}_expand_bn")(y)
    y = layers.Activation("hard_swish", name=f"{prefix}_expand_act")(y)
    y = layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False,
        name=f"{prefix}_depthwise",
    )(y)  # fmt: skip
    y = layers.BatchNormalization(name=f"{prefix}_depthwise_bn")(y)
    y = layers.Activation("hard_swish", name=f"{prefix}_depthwise_act")(y)
    if use_se:
        y = _squeeze_excite(y, prefix)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{prefix}_project")(y)
    y = layers.BatchNormalization(name=f"{prefix}_project_bn")(y)
    if strides == 1 and x.shape[-1] == filters:
        y = layers.Add(name=f"{prefix}_add")([x, y])
    return y


#: (expansion, output channels, stride, squeeze-and-excite) of each block
#: of `mobilenet_v3_style`, in three stages.
MOBILENET_STAGES = (
    ((64, 24, 2, False), (72, 24, 1, False)),
    ((96, 40, 2, True), (120, 40, 1, True)),
    ((240, 80, 2, True), (200, 80, 1, True)),
)


def mobilenet_v3_style(
    input_shape,
    num_classes: int,
    width: float = 1.0,
    name: str | None = None,
) -> keras.Model:
    """A small MobileNetV3-style network for small images.

    A 3x3 stem (16 channels, stride 1), then three stages of two inverted
    residual blocks (`MOBILENET_STAGES`: depthwise 3x3 convolutions,
    hard-swish, squeeze-and-excite in stages 2 and 3), a 1x1 convolution
    to ``256 * width`` channels, global average pooling and a dense layer
    that outputs logits. Stage outputs are named ``"stage1"`` ..
    ``"stage3"``. It exercises the architecture features bridges must
    handle on real mobile networks: depthwise convolutions, `Multiply`
    gates, identity `Add`s.

    Args:
        input_shape: shape of one input, channels last.
        num_classes: number of classes.
        width: channel multiplier of every layer.
        name: model name; defaults to ``"mobilenet_v3_style_x{width}"``.

    Returns:
        A functional `keras.Model` from images to logits.

    Example:

    >>> model = mobilenet_v3_style((28, 28, 1), num_classes=10)
    >>> model.get_layer("stage2").output.shape
    (None, 7, 7, 40)
    """
    if width <= 0:
        raise ValueError(f"`width` must be positive; received width={width}.")
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(
        _channels(16, width), 3, padding="same", use_bias=False, name="stem"
    )(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.Activation("hard_swish", name="stem_act")(x)
    for stage, blocks in enumerate(MOBILENET_STAGES, start=1):
        for index, (expand, filters, strides, use_se) in enumerate(blocks):
            last = index == len(blocks) - 1
            x = _inverted_residual(
                x, _channels(expand, width), _channels(filters, width),
                strides, use_se, f"stage{stage}_block{index + 1}",
            )  # fmt: skip
            if last:
                x = layers.Identity(name=f"stage{stage}")(x)
    x = layers.Conv2D(
        _channels(256, width), 1, use_bias=False, name="top_conv"
    )(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    x = layers.Activation("hard_swish", name="top_act")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(
        inputs, outputs, name=name or f"mobilenet_v3_style_x{width:g}"
    )
