"""Ensemble members as small typed values, with their one name format.

A member is a full network (`ModeMember`, named ``"mode_0"``), the
shared trunk's own network (`SharedMember`, named ``"shared"``: a trunk
trained for every head, with the anchor's tail distilling the anchor) or a
bridge (`BridgeMember`, named ``"type1_0-1_r0.5"``: its kind, the curve's
pair of modes and the position t on the curve it imitates, after ``r``;
``"shared_type1_0-1_r0.5"`` when it reads the shared trunk rather than
mode 0's frozen features). The names keep the letter ``r`` of version 0.3
so that saved ensembles, exports and reports keep their member names. A
t-conditioned bridge has ``point="any"`` (``"type1_0-1_rany"``) and is
evaluated at `DEFAULT_POINT` unless a name asks for another position:
``"type1_0-1_rany@0.3"``.

A member's ``sources`` are the networks whose feature maps it reads: mode
indices, or `SHARED` for the shared trunk.

Example:

>>> member = parse("type2_0-1_r0.5")
>>> member.kind, member.pair, member.sources
('type2', (0, 1), (0, 1))
>>> parse("type1_0-1_rany@0.3").t
0.3
"""

import dataclasses
import itertools
import re

import numpy as np

#: The curve position t a bridge imitates, and where a t-conditioned bridge is
#: evaluated, unless told otherwise.
DEFAULT_POINT = 0.5
#: The ``point`` of a t-conditioned bridge.
ANY_POINT = "any"
KINDS = ("type1", "type2")
#: The key of the shared trunk among a member's ``sources``.
SHARED = "shared"
#: How a bridge's trunk is trained: ``"frozen"`` (it reads a mode's own
#: features, the paper's bridges) or ``"shared"`` (one trunk, started from
#: the anchor's, trained with every head of the call).
TRUNKS = ("frozen", "shared")

_MODE = re.compile(r"mode_(\d+)")
_NUMBER = r"\d+(?:\.\d+)?(?:e-?\d+)?"
_BRIDGE = re.compile(
    rf"(shared_)?(type1|type2)_(\d+)-(\d+)_r(any|{_NUMBER})(?:@({_NUMBER}))?"
)


@dataclasses.dataclass(frozen=True)
class ModeMember:
    """A full network of the ensemble: mode ``index``."""

    index: int

    @property
    def name(self) -> str:
        return f"mode_{self.index}"

    @property
    def sources(self) -> tuple:
        return (self.index,)


@dataclasses.dataclass(frozen=True)
class SharedMember:
    """The shared trunk's own network: the trunk and the anchor's tail.

    Trained with the shared-trunk bridges to imitate the anchor, it is
    the full network those bridges extend (``"Shared trunk + k Type I"``
    rows of the report), as the anchor mode is for frozen-trunk bridges.
    """

    @property
    def name(self) -> str:
        return SHARED

    @property
    def sources(self) -> tuple:
        return (SHARED,)


def source_member(key) -> "ModeMember | SharedMember":
    """The full-network member that computes the feature map ``key``.

    Example:

    >>> source_member(2).name, source_member(SHARED).name
    ('mode_2', 'shared')
    """
    return SharedMember() if key == SHARED else ModeMember(int(key))


@dataclasses.dataclass(frozen=True)
class BridgeMember:
    """A bridge: a head imitating the curve of ``pair`` at ``point``.

    Attributes:
        kind: ``"type1"`` (reads mode ``pair[0]``) or ``"type2"`` (reads
            both modes of ``pair``).
        pair: the two modes joined by the curve.
        point: the curve position t the bridge imitates, or `ANY_POINT`
            for a t-conditioned bridge.
        at: where a t-conditioned bridge is evaluated; None means
            `DEFAULT_POINT`. Always None for a fixed-point bridge.
        shared: whether the bridge reads the shared trunk (see
            `SharedMember`) instead of mode ``pair[0]``'s frozen features.
    """

    kind: str
    pair: tuple
    point: object = DEFAULT_POINT
    at: float | None = None
    shared: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"`kind` must be 'type1' or 'type2'; received {self.kind!r}."
            )
        object.__setattr__(self, "pair", tuple(int(i) for i in self.pair))
        if self.point != ANY_POINT:
            object.__setattr__(self, "point", float(self.point))
            if self.at is not None:
                raise ValueError(
                    f"Only t-conditioned bridges take '@t'; {self.base.name!r}"
                    f" imitates the fixed position t={self.point:g}."
                )
        if self.at is not None:
            object.__setattr__(self, "at", check_point(self.at, "members"))
        object.__setattr__(self, "shared", bool(self.shared))
        if self.shared and self.kind != "type1":
            raise ValueError(
                "Only Type I bridges read the shared trunk; received "
                f"kind={self.kind!r} with a shared trunk."
            )

    @property
    def conditioned(self) -> bool:
        return self.point == ANY_POINT

    @property
    def sources(self) -> tuple:
        """The networks whose feature maps the bridge reads: mode indices,
        or `SHARED`."""
        if self.shared:
            return (SHARED,)
        return self.pair[:1] if self.kind == "type1" else self.pair

    @property
    def t(self) -> float:
        """The curve position t this member computes."""
        if not self.conditioned:
            return self.point
        return DEFAULT_POINT if self.at is None else self.at

    @property
    def base(self) -> "BridgeMember":
        """The trained bridge, without an evaluation point."""
        return dataclasses.replace(self, at=None)

    @property
    def name(self) -> str:
        point = ANY_POINT if self.conditioned else f"{self.point:g}"
        name = f"{self.kind}_{self.pair[0]}-{self.pair[1]}_r{point}"
        if self.shared:
            name = f"{SHARED}_{name}"
        return name if self.at is None else f"{name}@{self.at:g}"


def check_point(t, argument: str = "t") -> float:
    """Validates one position t on a curve: a number in [0, 1], not a
    bool."""
    if (
        isinstance(t, (bool, np.bool_))
        or not isinstance(t, (int, float, np.integer, np.floating))
        or not 0.0 <= float(t) <= 1.0
    ):
        raise ValueError(
            f"`{argument}` must hold curve positions t in [0, 1]; received "
            f"t={t!r}."
        )
    return float(t)


def parse(name) -> ModeMember | SharedMember | BridgeMember:
    """The member called ``name`` (a member object is returned as is).

    Raises:
        ValueError: naming ``members`` and the accepted formats.
    """
    if isinstance(name, (ModeMember, SharedMember, BridgeMember)):
        return name
    if name == SHARED:
        return SharedMember()
    if isinstance(name, str):
        match = _MODE.fullmatch(name)
        if match:
            return ModeMember(int(match.group(1)))
        match = _BRIDGE.fullmatch(name)
        if match:
            shared, kind, i, j, point, at = match.groups()
            return BridgeMember(
                kind,
                (int(i), int(j)),
                point if point == ANY_POINT else float(point),
                None if at is None else float(at),
                shared=bool(shared),
            )
    raise ValueError(
        "`members` must hold member names such as 'mode_0', "
        "'type1_0-1_r0.5' or 'type1_0-1_rany@0.3' (see `member_names`); "
        f"received {name!r}."
    )


def resolve_pairs(
    pairs, num_modes: int, argument: str = "pairs", anchor: int = 0
) -> list:
    """Pairs of mode indices: ``None`` for the ``anchor`` mode to every
    other mode, ``"all"`` for every pair, or a list of pairs (checked).

    Example:

    >>> resolve_pairs(None, 3)
    [(0, 1), (0, 2)]
    """
    if num_modes < 2:
        raise ValueError(
            "Curves join two modes: call `fit_modes` or `set_modes` "
            f"with at least 2 modes first (have {num_modes})."
        )
    if pairs is None:
        return [(anchor, j) for j in range(num_modes) if j != anchor]
    if pairs == "all":
        return list(itertools.combinations(range(num_modes), 2))
    resolved = []
    for pair in pairs if isinstance(pairs, (list, tuple)) else [None]:
        valid = (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(
                isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                for i in pair
            )
        )
        i, j = pair if valid else (-1, -1)
        if not (valid and 0 <= i < num_modes and 0 <= j < num_modes and i != j):
            raise ValueError(
                f"`{argument}` must hold pairs of distinct mode indices in "
                f"[0, {num_modes}); received {pairs!r}."
            )
        resolved.append((int(i), int(j)))
    if not resolved:
        raise ValueError(f"`{argument}` must hold at least one pair.")
    if len(set(resolved)) != len(resolved):
        raise ValueError(
            f"`{argument}` must not repeat a pair; received {pairs!r}."
        )
    return resolved


def resolve(names, num_modes: int, bridges, has_shared: bool = False) -> list:
    """The members called ``names``, checked against an ensemble of
    ``num_modes`` modes, the trained ``bridges`` (`BridgeMember`s) and,
    with ``has_shared``, a shared trunk."""
    known = [ModeMember(i).name for i in range(num_modes)]
    known += [SHARED] if has_shared else []
    known += [bridge.name for bridge in bridges]
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(
            f"`members` must be a list of member names; received {names!r}. "
            f"Known: {known}."
        )
    if not names:
        raise ValueError(
            "`members` must hold at least one member; received an empty "
            f"list. Known: {known}."
        )
    found = [parse(name) for name in names]
    if len(set(found)) != len(found):
        raise ValueError(
            f"`members` must not repeat a member; received {list(names)}."
        )
    for member in found:
        if isinstance(member, ModeMember):
            exists = member.index < num_modes
        elif isinstance(member, SharedMember):
            exists = has_shared
        else:
            exists = member.base in bridges
        if not exists:
            raise ValueError(
                "`members` must name modes or fitted bridges; received "
                f"{member.name!r}. Known: {known}."
            )
    return found


def serving_name(member: str) -> str:
    """A member's name as a layer or output name.

    Every character other than a letter, digit or underscore becomes an
    underscore, so the name is a valid Keras layer name (a bridge's head
    is named from it) and a valid output key for TF Serving's REST and
    gRPC APIs and for ONNX (the ``members`` signature of
    `keras_bridge.export`).

    Example:

    >>> serving_name("type1_0-1_r0.5")
    'type1_0_1_r0_5'
    """
    return re.sub(r"[^0-9A-Za-z_]", "_", member)
