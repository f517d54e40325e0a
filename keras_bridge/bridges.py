"""Bridges of an ensemble: their heads, teachers and inference graph."""

import dataclasses
import warnings

import keras
import numpy as np

from keras_bridge.layers.bridge_head import BridgeHead
from keras_bridge.layers.ensemble_outputs import EnsembleOutputs
from keras_bridge.splitting import slim_tail

KINDS = ("type1", "type2")
#: Points of the curve an r-conditioned bridge is trained against.
CONDITIONED_GRID = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())


@dataclasses.dataclass
class Bridge:
    """One bridge: a head, what it reads, and what it imitates.

    Attributes:
        kind: ``"type1"`` (reads mode ``pair[0]``) or ``"type2"`` (reads
            both modes of ``pair``).
        pair: the two modes of the curve whose point is imitated.
        point: the curve point r, or ``"any"`` for an r-conditioned head.
        head: the `BridgeHead`.
    """

    kind: str
    pair: tuple
    point: object
    head: BridgeHead

    @property
    def sources(self) -> tuple:
        return (self.pair[0],) if self.kind == "type1" else tuple(self.pair)

    @property
    def name(self) -> str:
        r = "any" if self.point == "any" else f"{self.point:g}"
        return f"{self.kind}_{self.pair[0]}-{self.pair[1]}_r{r}"


def check_points(points):
    """Validates ``points``: ``"any"`` or floats in [0, 1]."""
    if points == "any":
        return "any"
    if isinstance(points, (int, float)):
        points = (points,)
    checked = []
    for r in points:
        if not isinstance(r, (int, float)) or not 0.0 <= float(r) <= 1.0:
            raise ValueError(
                "`points` must be 'any' or curve points r in [0, 1]; "
                f"received r={r!r}."
            )
        checked.append(float(r))
    if not checked:
        raise ValueError("`points` must hold at least one r.")
    return tuple(checked)


def parse_member(name: str):
    """Splits ``"type1_0-1_rany@0.3"`` into ``("type1_0-1_rany", 0.3)``."""
    if "@" in name:
        base, r = name.split("@", 1)
        return base, float(r)
    return name, None


def make_head(ens, sources, conditioned: bool, head=None) -> BridgeHead:
    """A fresh head for a bridge reading the modes ``sources``.

    ``head`` is None or a dict: ``slim`` (default 2) rebuilds the
    backbone's tail after the feature layer at 1/slim width; ``width``
    (with optional ``depth``) asks for a residual conv head instead. When
    the tail cannot be rebuilt the residual head is used, with a warning.
    A `BridgeHead` instance is used as given.
    """
    if isinstance(head, BridgeHead):
        return head
    options = dict(head or {})
    unknown = set(options) - {"slim", "width", "depth"}
    if unknown:
        raise ValueError(
            "`head` accepts the keys 'slim', 'width' and 'depth'; "
            f"received {sorted(unknown)}."
        )
    features = ens.backbone.get_layer(ens.feature_layer).output
    channels = int(features.shape[-1]) * len(sources) + int(conditioned)
    if "width" not in options:
        try:
            tail = slim_tail(
                ens.backbone,
                ens.feature_layer,
                channels,
                slim=options.get("slim", 2),
            )
            return BridgeHead(
                ens.num_classes, tail=tail, conditioned=conditioned
            )
        except ValueError as error:
            warnings.warn(
                f"{error} Using a residual conv head instead.", stacklevel=3
            )
    width = options.get("width") or max(8, int(features.shape[-1]) // 2)
    return BridgeHead(
        ens.num_classes,
        width=width,
        depth=options.get("depth", 2),
        conditioned=conditioned,
    )


def plan(ens, kind: str, pairs, points, head=None):
    """The bridges one `BridgeEnsemble.fit_bridge` call trains.

    Returns:
        ``(bridges, specs)``: the new `Bridge` objects, and for each the
        training spec `keras_bridge.distillation.BridgeDistiller` takes
        (head, source modes, teachers and their points). A conditioned
        bridge (``points="any"``) has a teacher at every point of
        `CONDITIONED_GRID`.
    """
    conditioned = points == "any"
    new, specs = [], []
    for pair in pairs:
        for r in ("any",) if conditioned else points:
            sources = (pair[0],) if kind == "type1" else tuple(pair)
            head_layer = make_head(ens, sources, conditioned, head)
            rs = CONDITIONED_GRID if conditioned else (r,)
            specs.append(
                {
                    "head": head_layer,
                    "sources": sources,
                    "teachers": [ens.point_model(pair, t) for t in rs],
                    "points": [float(t) for t in rs],
                }
            )
            new.append(Bridge(kind, tuple(pair), r, head_layer))
    return new, specs


def trunks_for(ens, specs) -> dict:
    """One feature model per mode that some spec reads, by mode index."""
    needed = sorted({i for spec in specs for i in spec["sources"]})
    return {
        i: feature_model(
            ens.modes[i], ens.feature_index, False, name=f"trunk_{i}"
        )
        for i in needed
    }


def feature_model(
    mode, feature_index: int, with_logits: bool, name: str | None = None
):
    """Model from a mode's input to its feature map (and its logits).

    ``name`` must differ between the trunks of one graph; modes given to
    `BridgeEnsemble.set_modes` may share a model name.
    """
    features = mode.layers[feature_index].output
    outputs = [features, mode.outputs[0]] if with_logits else features
    return keras.Model(mode.inputs, outputs, name=name or f"trunk_{mode.name}")


def build_inference_model(ens, members, temperature: float = 1.0):
    """One graph from the input to the serving outputs of ``members``.

    Every mode that a member needs runs once: a member mode returns both
    its feature map and its logits, a mode only read by bridges stops at
    the feature map.
    """
    mode_members, bridge_members = [], []
    for name in members:
        base, r = parse_member(name)
        if base.startswith("mode_"):
            mode_members.append(int(base.split("_")[1]))
        else:
            bridge_members.append((ens.get_bridge(base), r))
    needed = set(mode_members)
    for bridge, _ in bridge_members:
        needed.update(bridge.sources)
    inputs = keras.Input(
        shape=ens.backbone.inputs[0].shape[1:],
        dtype=ens.backbone.inputs[0].dtype,
        name="inputs",
    )
    features, logits = {}, {}
    for index in sorted(needed):
        with_logits = index in mode_members
        trunk = feature_model(
            ens.modes[index],
            ens.feature_index,
            with_logits,
            name=f"trunk_{index}",
        )
        if with_logits:
            features[index], logits[index] = trunk(inputs)
        else:
            features[index] = trunk(inputs)
    member_logits = []
    for name in members:
        base, r = parse_member(name)
        if base.startswith("mode_"):
            member_logits.append(logits[int(base.split("_")[1])])
            continue
        bridge = ens.get_bridge(base)
        maps = [features[i] for i in bridge.sources]
        if bridge.point == "any":
            r = 0.5 if r is None else r
        member_logits.append(
            bridge.head(
                maps if len(maps) > 1 else maps[0],
                r=r if bridge.head.conditioned else None,
            )
        )
    outputs = EnsembleOutputs(temperature, name="ensemble")(member_logits)
    return keras.Model(inputs, outputs, name="bridge_ensemble")
