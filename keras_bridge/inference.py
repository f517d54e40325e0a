"""The shared-trunk inference graph of an ensemble."""

import functools

import keras

from keras_bridge.flop_count import flops, output_flops
from keras_bridge.graph import feature_model
from keras_bridge.layers.ensemble_outputs import EnsembleOutputs
from keras_bridge.members import SHARED, BridgeMember


def network(modes, shared, key):
    """The full network whose feature map ``key`` (a mode index or
    `SHARED`) names."""
    if key != SHARED:
        return modes[key]
    if shared is None:
        raise ValueError(
            "A member reads the shared trunk, but the ensemble has none: "
            "fit it with `fit_bridge(..., trunk='shared')`."
        )
    return shared


def build_inference_model(
    modes,
    feature_index: int,
    members,
    heads,
    temperature: float = 1.0,
    shared=None,
) -> keras.Model:
    """One graph from the input to the serving outputs of ``members``.

    Every mode that a member needs runs once: a member mode, or one read
    by a head with ``base_logits``, returns both its feature map and its
    logits; a mode only read by other bridges stops at the feature map.
    The graph shares the modes' and heads' layers (no copy), so building
    it changes nothing.

    Args:
        modes: list of the mode models.
        feature_index: position of the feature layer in a mode's layers.
        members: list of `ModeMember` / `SharedMember` / `BridgeMember`,
            in output order.
        heads: dict from a trained `BridgeMember` (``member.base``) to its
            head.
        temperature: temperature of the ensemble mean.
        shared: the shared trunk's network (see
            `keras_bridge.members.SharedMember`), or None.

    Returns:
        A functional `keras.Model` with input ``inputs`` and the outputs of
        `keras_bridge.layers.EnsembleOutputs`.

    Example:

    >>> mode = keras_bridge.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    >>> index = [layer.name for layer in mode.layers].index("stage2")
    >>> member = keras_bridge.members.ModeMember(0)
    >>> model = build_inference_model([mode], index, [member], {})
    >>> sorted(model.output)
    ['class_ids', 'member_probabilities', 'mutual_information',
     'predictive_entropy', 'probabilities']
    """
    inputs, member_logits = _member_logits(
        modes, feature_index, members, heads, shared
    )
    outputs = EnsembleOutputs(temperature, name="ensemble")(member_logits)
    return keras.Model(inputs, outputs, name="bridge_ensemble")


def _member_logits(modes, feature_index, members, heads, shared):
    """The input and each member's logits of `build_inference_model`."""
    if not members:
        raise ValueError("`members` must hold at least one member.")
    needed = sorted({i for member in members for i in member.sources}, key=str)
    with_logits = {
        m.sources[0] for m in members if not isinstance(m, BridgeMember)
    }
    for member in members:
        if isinstance(member, BridgeMember) and heads[member.base].base_logits:
            with_logits.update(member.sources)
    reference = modes[0].inputs[0]
    inputs = keras.Input(
        shape=reference.shape[1:], dtype=reference.dtype, name="inputs"
    )
    features, logits = {}, {}
    for index in needed:
        trunk = feature_model(
            network(modes, shared, index),
            feature_index,
            index in with_logits,
            name=f"trunk_{index}",
        )
        if index in with_logits:
            features[index], logits[index] = trunk(inputs)
        else:
            features[index] = trunk(inputs)
    member_logits = []
    for member in members:
        if not isinstance(member, BridgeMember):
            member_logits.append(logits[member.sources[0]])
            continue
        head = heads[member.base]
        member_logits.append(
            head.apply(
                [features[i] for i in member.sources],
                t=member.t,
                logits=[logits.get(i) for i in member.sources],
            )
        )
    return inputs, member_logits


def member_flops(
    modes, feature_index: int, members, heads, temperature=1.0, shared=None
):
    """FLOPs of the inference model of any subset of ``members``, from
    one trace of all of them.

    Equal to `kb.flops` of `build_inference_model` of the subset: a
    subset's graph is the part of the whole graph its members' logits
    need (each trunk counted once), plus the `EnsembleOutputs` of its
    size. Arguments as in `build_inference_model`.

    Returns:
        A function from a list of members (of ``members``) to their
        model's FLOPs (an int).

    Example:

    >>> mode = keras_bridge.models.plain_cnn((8, 8, 1), 10, width=0.25)
    >>> modes = [mode, keras.models.clone_model(mode)]
    >>> index = [layer.name for layer in mode.layers].index("stage2")
    >>> members = [keras_bridge.members.ModeMember(i) for i in (0, 1)]
    >>> count = member_flops(modes, index, members, {})
    >>> model = build_inference_model(modes, index, members, {})
    >>> count(members) == flops(model), count(members[:1]) < count(members)
    (True, True)
    """
    members = list(members)
    inputs, member_logits = _member_logits(
        modes, feature_index, members, heads, shared
    )
    parts = output_flops(keras.Model(inputs, member_logits))
    position = {member: i for i, member in enumerate(members)}

    @functools.cache
    def outputs_flops(size: int) -> int:
        first = member_logits[0]
        logits = [keras.Input(first.shape[1:], dtype=first.dtype)] * size
        return flops(keras.Model(logits, EnsembleOutputs(temperature)(logits)))

    def count(chosen) -> int:
        chosen = list(chosen)
        return parts([position[m] for m in chosen]) + outputs_flops(len(chosen))

    return count
