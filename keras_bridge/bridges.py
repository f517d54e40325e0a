"""Bridge heads and their training: sizing a head, distilling it.

Functions here take plain values (the backbone, feature maps, teachers)
and return new heads; modes and teachers are read, never changed.
"""

import warnings

import numpy as np

from keras_bridge import distillation, training
from keras_bridge.graph import feature_model
from keras_bridge.layers.bridge_head import BaseBridgeHead, BridgeHead, TailHead
from keras_bridge.members import (
    ANY_POINT,
    KINDS,
    BridgeMember,
    check_point,
    resolve_pairs,
)
from keras_bridge.splitting import slim_tail

#: Points of the curve an r-conditioned bridge is trained against.
CONDITIONED_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())
#: Default width divisor of a head that rebuilds the backbone's tail.
DEFAULT_SLIM = 2


def check_points(points) -> tuple | str:
    """Validates ``points``: `ANY_POINT` or floats in [0, 1].

    Example:

    >>> check_points(0.5)
    (0.5,)
    """
    if points == ANY_POINT:
        return ANY_POINT
    if isinstance(points, (int, float)):
        points = (points,)
    if isinstance(points, str) or not hasattr(points, "__iter__"):
        raise ValueError(
            "`points` must be 'any' or curve points r in [0, 1]; received "
            f"points={points!r}."
        )
    checked = tuple(check_point(r) for r in points)
    if not checked:
        raise ValueError("`points` must hold at least one r.")
    return checked


def check_request(kind, pairs, points, curves, num_modes) -> tuple:
    """Checks a `BridgeEnsemble.fit_bridge` request against the fitted
    ``curves``: returns ``(pairs, points)``."""
    if kind not in KINDS:
        raise ValueError(
            f"`kind` must be 'type1' or 'type2'; received kind={kind!r}."
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
    return (sorted(curves) if pairs is None else pairs), points


def teacher_points(point) -> tuple:
    """The curve points a bridge of ``point`` learns from."""
    return CONDITIONED_GRID if point == ANY_POINT else (point,)


def make_head(
    backbone, feature_layer: str, num_sources: int, conditioned: bool, head
) -> BaseBridgeHead:
    """A fresh head for a bridge reading ``num_sources`` feature maps.

    ``head`` is None or a dict: ``slim`` (default `DEFAULT_SLIM`) rebuilds
    the backbone's tail after the feature layer at 1/slim width (a
    `TailHead`); ``width`` (with optional ``depth``) asks for a residual
    conv head (a `BridgeHead`) instead. When the tail cannot be rebuilt
    the residual head is used, with a warning. A head instance is used as
    given (it must not be built yet).
    """
    num_classes = int(backbone.outputs[0].shape[-1])
    if isinstance(head, BaseBridgeHead):
        if head.built:
            raise ValueError(
                "`head` must be a fresh, unbuilt bridge head: one head per "
                f"bridge; received the built head {head.name!r}."
            )
        return head
    if head is not None and not isinstance(head, dict):
        raise ValueError(
            "`head` must be None, a dict of 'slim' or 'width'/'depth', or a "
            f"bridge head; received {type(head).__name__}."
        )
    options = dict(head or {})
    unknown = set(options) - {"slim", "width", "depth"}
    if unknown:
        raise ValueError(
            "`head` accepts the keys 'slim', 'width' and 'depth'; "
            f"received {sorted(unknown)}."
        )
    features = backbone.get_layer(feature_layer).output
    channels = int(features.shape[-1]) * num_sources + int(conditioned)
    if "width" not in options:
        try:
            tail = slim_tail(
                backbone,
                feature_layer,
                channels,
                slim=options.get("slim", DEFAULT_SLIM),
            )
            return TailHead(num_classes, tail, conditioned=conditioned)
        except ValueError as error:
            if "`slim` must be" in str(error):
                raise
            warnings.warn(
                f"{error} Using a residual conv head instead.", stacklevel=3
            )
    width = options.get("width") or max(8, int(features.shape[-1]) // 2)
    return BridgeHead(
        num_classes,
        width=width,
        depth=options.get("depth", 2),
        conditioned=conditioned,
    )


def plan(kind, pairs, points, head, backbone, feature_layer, teacher):
    """The bridges one `BridgeEnsemble.fit_bridge` call trains.

    Args:
        kind, pairs, points, head: as in `BridgeEnsemble.fit_bridge`
            (checked).
        backbone, feature_layer: where the heads read.
        teacher: ``teacher(pair, r)`` returns the curve network at r.

    Returns:
        ``(heads, specs)``: a dict from each new `BridgeMember` to its
        fresh head, and the specs `distill` takes.
    """
    heads, specs = {}, []
    for pair in pairs:
        for point in (points,) if points == ANY_POINT else points:
            member = BridgeMember(kind, pair, point)
            heads[member] = make_head(
                backbone,
                feature_layer,
                len(member.sources),
                member.conditioned,
                head,
            )
            rs = teacher_points(point)
            specs.append(
                {
                    "head": heads[member],
                    "sources": member.sources,
                    "teachers": [teacher(pair, r) for r in rs],
                    "points": list(rs),
                }
            )
    return heads, specs


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
            ``callbacks``, ``validation_data``, ``verbose``.

    Returns:
        The `keras.callbacks.History`. The heads are trained in place.
    """
    needed = sorted({i for spec in specs for i in spec["sources"]})
    trunks = {
        i: feature_model(modes[i], feature_index, name=f"trunk_{i}")
        for i in needed
    }
    distiller = distillation.BridgeDistiller(
        trunks, specs, mixup_alpha=options["mixup_alpha"]
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
    callbacks = [training.StopOnNonFinite("fit_bridge")]
    history = distiller.fit(
        data,
        epochs=options["epochs"],
        validation_data=options["validation_data"],
        callbacks=callbacks + list(options["callbacks"] or []),
        verbose=options["verbose"],
        shuffle=False,
    )
    for spec in specs:
        training.check_finite_weights(spec["head"], "fit_bridge")
    return history
