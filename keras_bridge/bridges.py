"""Bridge heads and their training: sizing a head, distilling it.

Functions here take plain values (the backbone, feature maps, teachers)
and return new heads; modes and teachers are read, never changed.
"""

import dataclasses
import hashlib
import math
import numbers

import keras
import numpy as np

from keras_bridge import compat, distillation, training
from keras_bridge.arguments import positive_float, positive_int
from keras_bridge.backbone import slim_tail
from keras_bridge.curve_model import recalibrate_batchnorm
from keras_bridge.flop_count import flops
from keras_bridge.graph import feature_model
from keras_bridge.layers.bridge_head import (
    BaseBridgeHead,
    BridgeHead,
    TailHead,
    logits_weight,
)
from keras_bridge.members import (
    ANY_POINT,
    DEFAULT_POINT,
    KINDS,
    SHARED,
    TRUNKS,
    BridgeMember,
    check_point,
    resolve_pairs,
    serving_name,
)

#: Positions on the curve a t-conditioned bridge is trained against.
CONDITIONED_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())
#: Width divisors tried, in order, for a head that rebuilds the tail.
TAIL_SLIMS = (2, 3, 4, 6, 8, 12, 16)
#: Default cost bound of a head, per feature map it reads, relative to one
#: backbone pass: Single + 4 Type I then costs at most 1.48x.
DEFAULT_MAX_FLOPS = 0.12


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """What bridge head `BridgeEnsemble.fit_bridge` builds, and its budget.

    Groups the head's settings as Keras groups an optimizer's in an
    optimizer object. With nothing set, the backbone's tail after the
    feature layer is rebuilt at the widest reduced width that fits
    ``max_flops`` (see `size_head`). ``fit_bridge(head=...)`` also takes
    these fields as a dict, e.g. ``{"width": 32, "max_flops": 0.2}``.

    Args:
        slim: rebuild the backbone's tail at 1/``slim`` width (a
            `keras_bridge.layers.TailHead`).
        width: ask for a residual conv head of this width instead (a
            `keras_bridge.layers.BridgeHead`), ``depth`` blocks deep
            (default 2).
        depth: blocks of the residual head; only with ``width``.
        base_logits: True (the default: the head corrects the logits of
            the mode(s) it reads), False (it predicts logits from
            scratch; the default on a shared trunk) or the fraction of
            those logits it corrects, e.g. 0.5.
        max_flops: the most one head may cost, as a fraction of one
            backbone pass; ``None`` for `DEFAULT_MAX_FLOPS` per feature
            map the head reads (Single + 4 Type I <= 1.48x).

    Example:

    >>> spec = HeadSpec.get({"width": 32, "max_flops": 0.2})
    >>> spec.width, spec.depth, spec.max_flops
    (32, None, 0.2)
    >>> spec.architecture()
    {'width': 32}
    """

    slim: float | None = None
    width: int | None = None
    depth: int | None = None
    base_logits: bool | float | None = None
    max_flops: float | None = None

    @classmethod
    def get(cls, head) -> "HeadSpec | BaseBridgeHead":
        """``head`` as a `HeadSpec` (from None, a dict or a spec); a head
        layer is returned as is."""
        if head is None:
            return cls()
        if isinstance(head, (cls, BaseBridgeHead)):
            return head
        if not isinstance(head, dict):
            raise ValueError(
                "`head` must be None, a `HeadSpec`, a dict of its fields "
                "or a bridge head layer; received "
                f"{type(head).__name__}."
            )
        fields = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(head) - set(fields))
        if unknown:
            raise ValueError(
                f"`head` accepts the keys {fields}; received {unknown}."
            )
        return cls(**head)

    def architecture(self) -> dict | None:
        """The set architecture fields, as `size_head` takes them: None
        when none is set."""
        values = {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if value is not None and key != "max_flops"
        }
        return values or None


def check_points(t) -> tuple | str:
    """Validates ``fit_bridge``'s ``t``: a position in [0, 1], a list of
    them or `ANY_POINT`; returns a tuple of positions or `ANY_POINT`.

    Example:

    >>> check_points(0.5)
    (0.5,)
    """
    if isinstance(t, str) and t == ANY_POINT:
        return ANY_POINT
    positions = (t,) if isinstance(t, (int, float, np.number)) else t
    if isinstance(positions, str) or not hasattr(positions, "__iter__"):
        raise ValueError(
            "`t` must be a curve position in [0, 1], a list of them or "
            f"'any'; received t={t!r}."
        )
    checked = tuple(check_point(value) for value in positions)
    if not checked:
        raise ValueError("`t` must hold at least one curve position.")
    if len(set(checked)) != len(checked):
        raise ValueError(f"`t` must not repeat a position; received t={t!r}.")
    return checked


def check_request(
    kind, pairs, points, curves, num_modes, max_flops, trunk="frozen"
):
    """Checks a `BridgeEnsemble.fit_bridge` request against the fitted
    ``curves``: returns ``(pairs, points)``."""
    check_budget(max_flops, 1)
    if kind not in KINDS:
        raise ValueError(
            f"`kind` must be 'type1' or 'type2'; received kind={kind!r}."
        )
    if trunk not in TRUNKS:
        raise ValueError(
            f"`trunk` must be 'frozen' or 'shared'; received trunk={trunk!r}."
        )
    if trunk == "shared" and kind != "type1":
        raise ValueError(
            "`trunk='shared'` trains one trunk for Type I heads; Type II "
            "bridges read two modes' frozen features. Use kind='type1', or "
            "trunk='frozen' for Type II."
        )
    if kind == "type2" and num_modes < 2:
        raise ValueError(
            "`kind='type2'` bridges read two modes; the ensemble has "
            f"{num_modes}. Train at least 2 modes first."
        )
    if not curves:
        raise ValueError(
            "Bridges imitate curve points: call `fit_curves` before "
            "`fit_bridge`."
        )
    points = check_points(points)
    if pairs is not None:
        pairs = resolve_pairs(pairs, num_modes)
    missing = [p for p in pairs or () if p not in curves]
    if missing:
        raise ValueError(
            f"`pairs` must name fitted curves; {missing} are not fitted "
            f"(fitted: {sorted(curves)})."
        )
    pairs = sorted(curves) if pairs is None else pairs
    if trunk == "shared" and len({pair[0] for pair in pairs}) > 1:
        raise ValueError(
            "`trunk='shared'` trains one trunk from one mode: `pairs` must "
            f"all start at the same mode; received {pairs}."
        )
    return pairs, points


def head_name(member) -> str:
    """The layer name of the head of the `BridgeMember` ``member``.

    Example:

    >>> head_name(BridgeMember("type1", (0, 1), 0.5))
    'head_type1_0_1_r0_5'
    """
    return "head_" + serving_name(member.name)


def teacher_points(point) -> tuple:
    """The curve points a bridge of ``point`` learns from."""
    return CONDITIONED_GRID if point == ANY_POINT else (point,)


def residual_widths(channels: int) -> list:
    widths, width = [], max(8, channels)
    while width >= 8:
        widths.append(width)
        width //= 2
    return widths


def _slim(slim) -> float:
    if isinstance(slim, bool) or not (
        isinstance(slim, numbers.Real) and math.isfinite(slim) and slim >= 1
    ):
        raise ValueError(
            "`head['slim']` must be a finite number >= 1; received "
            f"head['slim']={slim!r}."
        )
    return float(slim)


def _candidates(backbone, feature_layer, in_channels, conditioned, head):
    """(description, factory) of every head architecture to try, the most
    capable first; a factory takes the new head's name."""
    num_classes = int(backbone.outputs[0].shape[-1])
    channels = int(backbone.get_layer(feature_layer).output.shape[-1])
    options = dict(head or {})
    base_logits = logits_weight(
        options.pop("base_logits", True), "head['base_logits']"
    )

    def tail(slim, entry):
        def build(name=None):
            tail_model = slim_tail(
                backbone, feature_layer, in_channels, slim, entry=entry
            )
            return TailHead(
                num_classes,
                tail_model,
                conditioned=conditioned,
                base_logits=base_logits,
                name=name,
            )

        name = "tail" + (" with entry projection" if entry else "")
        return f"the {name} at 1/{slim:g} width", build

    def residual(width, depth):
        def build(name=None):
            return BridgeHead(
                num_classes,
                width=width,
                depth=depth,
                conditioned=conditioned,
                base_logits=base_logits,
                name=name,
            )

        return f"a residual head of width {width}, depth {depth}", build

    if "width" in options:
        width = positive_int(options["width"], "head['width']")
        depth = positive_int(options.get("depth", 2), "head['depth']", 0)
        yield residual(width, depth)
        return
    slims = (_slim(options["slim"]),) if "slim" in options else TAIL_SLIMS
    for slim in slims:
        yield tail(slim, False)
        yield tail(slim, True)
    if "slim" not in options:
        for width in residual_widths(channels):
            for depth in (2, 1):
                yield residual(width, depth)


def head_flops(head, feature_shape, num_sources) -> int:
    """FLOPs of one pass of ``head`` on ``num_sources`` feature maps of
    ``feature_shape`` (building it if needed), counted by `kb.flops`."""
    maps = [keras.Input(feature_shape) for _ in range(num_sources)]
    logits = [keras.Input((head.num_classes,)) for _ in range(num_sources)]
    outputs = head.apply(maps, t=DEFAULT_POINT, logits=logits)
    inputs = maps + logits if head.base_logits else maps
    return flops(keras.Model(inputs, outputs))


def check_budget(max_flops, num_sources) -> float:
    if max_flops is None:
        return DEFAULT_MAX_FLOPS * num_sources
    # An infinite budget prices any head (`BridgeHyperModel.cost`).
    return positive_float(max_flops, "max_flops", finite=False)


def size_head(
    backbone,
    feature_layer,
    num_sources,
    conditioned,
    head,
    max_flops,
    name=None,
):
    """Chooses a head architecture that costs at most ``max_flops``.

    ``head`` is None or a dict: ``slim`` rebuilds the backbone's tail after
    the feature layer at 1/slim width (a `TailHead`); ``width`` (with
    optional ``depth``) asks for a residual conv head (a `BridgeHead`).
    With None, the tail is tried at `TAIL_SLIMS` widths (with a 1x1 entry
    projection where the plain rebuild fails), then residual heads of
    decreasing width: the first that fits the budget is taken. The heads
    built here add their output to the logits of the modes they read
    (``base_logits``, see `keras_bridge.layers.BaseBridgeHead`) unless the
    dict says ``"base_logits": False`` (or gives the fraction of those
    logits to correct, e.g. ``0.5``). A head instance is checked as
    given.

    Args:
        backbone, feature_layer: where the head reads.
        num_sources: feature maps it reads (2 for Type II).
        conditioned: whether it takes the curve position t.
        head: None, a dict, or a head instance.
        max_flops: the budget, relative to one backbone pass; None for
            `DEFAULT_MAX_FLOPS` per feature map read.
        name: name of the first head.

    Returns:
        ``(first, build, cost, description)``: a built head, a function of
        a name that builds another like it, its cost relative to one
        backbone, and what it is.

    Raises:
        ValueError: when the head (or every candidate) is over budget,
            giving its cost.

    Example:

    >>> backbone = keras_bridge.models.resnet((8, 8, 1), 10, depth=8)
    >>> head, build, cost, what = size_head(backbone, "stage2", 1, False,
    ...     None, max_flops=0.12)
    >>> cost <= 0.12
    True
    """
    max_flops = check_budget(max_flops, num_sources)
    feature_shape = tuple(backbone.get_layer(feature_layer).output.shape[1:])
    base = flops(backbone)
    in_channels = feature_shape[-1] * num_sources + int(conditioned)
    num_classes = int(backbone.outputs[0].shape[-1])
    if isinstance(head, BaseBridgeHead):
        if head.num_classes != num_classes or head.conditioned != conditioned:
            raise ValueError(
                f"`head` must output {num_classes} classes and have "
                f"conditioned={conditioned} (for `t`); received "
                f"num_classes={head.num_classes}, "
                f"conditioned={head.conditioned}."
            )
        candidates = [(f"the given head {head.name!r}", lambda name: head)]
    else:
        if head is not None and not isinstance(head, dict):
            raise ValueError(
                "`head` must be None, a dict of 'slim' or 'width'/'depth', "
                f"or a bridge head; received {type(head).__name__}."
            )
        unknown = set(head or {}) - {"slim", "width", "depth", "base_logits"}
        if unknown:
            raise ValueError(
                "`head` accepts the keys 'slim', 'width', 'depth' and "
                f"'base_logits'; received {sorted(unknown)}."
            )
        candidates = _candidates(
            backbone, feature_layer, in_channels, conditioned, head
        )
    tried = []
    for description, build in candidates:
        try:
            first = build(name)
            cost = head_flops(first, feature_shape, num_sources)
        except (ValueError, TypeError) as error:
            tried.append(f"{description} cannot be built ({error})")
            continue
        if cost <= max_flops * base:
            return first, build, cost / base, description
        tried.append(f"{description} costs {cost / base:.3f}x")
    advice = (
        "Raise `max_flops`, or pass a smaller head."
        if head is not None
        else "Raise `max_flops`, or choose an earlier `feature_layer`."
    )
    raise ValueError(
        f"No bridge head fits `max_flops`={max_flops:g} (a fraction of one "
        f"backbone pass): {'; '.join(tried[-3:])}. {advice}"
    )


def plan(kind, pairs, points, options, backbone, feature_layer, teacher):
    """The bridges one `BridgeEnsemble.fit_bridge` call trains.

    Args:
        kind, pairs, points: as in `BridgeEnsemble.fit_bridge` (checked).
        options: ``head`` and ``max_flops`` of `size_head`, and ``trunk``
            (``"frozen"`` or ``"shared"``; a shared-trunk head predicts
            logits from scratch unless its dict sets ``base_logits``).
        backbone, feature_layer: where the heads read.
        teacher: ``teacher(pair, t)`` returns the curve network at t.

    Returns:
        ``(heads, specs, sized)``: a dict from each new `BridgeMember` to
        its fresh head, the specs `distill` takes, and the head's cost
        relative to one backbone and description (see `size_head`).
    """
    if isinstance(options["head"], BaseBridgeHead):
        count = len(pairs) * (1 if points == ANY_POINT else len(points))
        if count > 1:
            raise ValueError(
                "A `head` instance serves one bridge only; this call trains "
                f"{count}. Pass a dict such as {{'width': 32}} instead."
            )
    shared = options.get("trunk") == "shared"
    head = options["head"]
    if shared and (head is None or isinstance(head, dict)):
        head = {"base_logits": False, **(head or {})}
    heads, specs, sized = {}, [], None
    for pair in pairs:
        for point in (points,) if points == ANY_POINT else points:
            member = BridgeMember(kind, pair, point, shared=shared)
            name = head_name(member)
            if sized is None:
                sized = size_head(
                    backbone,
                    feature_layer,
                    len(member.sources),
                    member.conditioned,
                    head,
                    options["max_flops"],
                    name=name,
                )
                heads[member] = sized[0]
            else:
                heads[member] = sized[1](name)
            rs = teacher_points(point)
            specs.append(
                {
                    "head": heads[member],
                    "sources": member.sources,
                    "teachers": [teacher(pair, r) for r in rs],
                    "points": list(rs),
                }
            )
    return heads, specs, sized[2:]


def trunk_models(modes, feature_index, heads, sources) -> dict:
    """The feature extractors that heads reading ``sources`` need, by mode:
    a mode read by a head with ``base_logits`` also returns its logits.
    The shared trunk (`SHARED`) is not among them: it trains, and
    `distill` builds it.

    Example:

    >>> mode = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> index = [layer.name for layer in mode.layers].index("stage2")
    >>> head = keras_bridge.layers.BridgeHead(10, width=8, base_logits=True)
    >>> trunks = trunk_models([mode], index, [head], [(0,)])
    >>> [tuple(t.shape[1:]) for t in trunks[0].outputs]
    [(4, 4, 8), (10,)]
    """
    needed = sorted({i for pair in sources for i in pair if i != SHARED})
    with_logits = {
        i
        for head, pair in zip(heads, sources)
        if head.base_logits
        for i in pair
    }
    return {
        i: feature_model(
            modes[i], feature_index, i in with_logits, name=f"trunk_{i}"
        )
        for i in needed
    }


def recalibrate_shared(trunk, specs, data) -> None:
    """Recomputes the BatchNorm statistics of a trained shared ``trunk``
    (a model to ``[feature map, logits]``) and of the heads of ``specs``
    that read it, on the clean inputs of ``data``: they trained on mixed
    (and augmented) inputs, but serve clean ones."""
    inputs = trunk.inputs[0] if len(trunk.inputs) == 1 else trunk.inputs
    features, logits = trunk(inputs)
    outputs = [logits]
    for spec in specs:
        if tuple(spec["sources"]) == (SHARED,):
            points = spec["points"]
            outputs.append(
                spec["head"].apply(
                    [features], t=points[len(points) // 2], logits=[logits]
                )
            )
    recalibrate_batchnorm(keras.Model(inputs, outputs), data)


def distill(modes, feature_index, specs, data, steps, options):
    """Trains the heads of ``specs`` against their teachers on ``data``.

    Args:
        modes: the mode models (read only).
        feature_index: position of the feature layer in a mode's layers.
        specs: list of dicts of `distillation.BridgeDistiller`'s
            ``bridges`` argument.
        data: batched dataset; its labels, if any, are not used.
        steps: batches per epoch.
        options: ``epochs``, ``optimizer``, ``learning_rate``, ``mixup_alpha``,
            ``callbacks``, ``validation_data``, ``verbose``,
            ``checkpoints`` (a `keras_bridge.checkpoints.Checkpoints` or
            None) to resume a killed training, and optionally ``shared``
            (``{"network": ..., "teacher": ...}``: the shared trunk's
            network, trained in place, and the model its logits imitate),
            ``augmentation`` (see `distillation.BridgeDistiller`) and
            ``keep_best`` (keep the weights of the epoch with the lowest
            ``val_kl``).

    Returns:
        The `keras.callbacks.History`. The heads (and a shared network)
        are trained in place.
    """
    trunks = trunk_models(
        modes,
        feature_index,
        [s["head"] for s in specs],
        [s["sources"] for s in specs],
    )
    shared = options.get("shared")
    if shared is not None:
        shared = {
            "trunk": feature_model(
                shared["network"], feature_index, True, name="trunk_shared"
            ),
            "teacher": shared["teacher"],
            "network": shared["network"],
        }
    distiller = distillation.BridgeDistiller(
        trunks,
        specs,
        mixup_alpha=options["mixup_alpha"],
        shared=shared,
        augmentation=options.get("augmentation"),
    )
    # Built before `fit`, as BackupAndRestore requires.
    for batch in data.take(1):
        distiller(batch[0] if isinstance(batch, tuple) else batch)
    distiller.compile(
        optimizer=training.make_optimizer(
            options["optimizer"],
            options["epochs"],
            steps,
            options["learning_rate"],
        ),
        jit_compile=False,
    )
    compat.build_for_fit(distiller, data)
    callbacks = [
        training.StopOnNonFinite(
            "fit_bridge", int(modes[0].outputs[0].shape[-1]), "agreement"
        )
    ]
    callbacks += list(options["callbacks"] or [])
    if options.get("keep_best") and options["validation_data"] is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_kl" if shared is None else "val_loss",
                mode="min",
                patience=options["epochs"],
                restore_best_weights=True,
            )
        )
    checkpoints = options.get("checkpoints")
    unit = (
        "bridges_"
        + hashlib.sha1(
            " ".join(spec["head"].name for spec in specs).encode()
        ).hexdigest()[:12]
    )
    if checkpoints is not None and checkpoints.finished(unit):
        checkpoints.restore(unit, distiller)
        return checkpoints.history(unit)
    if checkpoints is not None:
        callbacks += checkpoints.callbacks(unit)
    try:
        history = distiller.fit(
            data,
            epochs=options["epochs"],
            validation_data=options["validation_data"],
            callbacks=callbacks,
            verbose=options["verbose"],
            shuffle=False,
        )
    except FloatingPointError:
        if checkpoints is not None:  # a retry must not resume the divergence
            checkpoints.discard(unit)
        raise
    if shared is not None:
        recalibrate_shared(shared["trunk"], specs, data)
        training.check_finite_weights(shared["trunk"], "fit_bridge")
    for spec in specs:
        training.check_finite_weights(spec["head"], "fit_bridge")
    if checkpoints is not None:
        checkpoints.finish(unit, distiller, history)
    return history
