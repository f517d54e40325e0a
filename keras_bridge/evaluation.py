"""Scoring ensemble configurations: the report of `BridgeEnsemble`."""

import dataclasses
import itertools

import keras
import numpy as np
import tensorflow as tf

from keras_bridge import metrics as metrics_lib
from keras_bridge.distillation import teacher_fidelity
from keras_bridge.layers.ensemble_outputs import mutual_information
from keras_bridge.members import (
    DEFAULT_POINT,
    BridgeMember,
    ModeMember,
    SharedMember,
    source_member,
)
from keras_bridge.metrics import softmax
from keras_bridge.report import EnsembleReport

#: Equal-width confidence bins of the ECE columns, and the most bins of
#: each row's ``reliability`` entry.
RELIABILITY_BINS = 15

#: The fewest test inputs per bin of a row's ``reliability`` entry: its
#: bins hold equal counts, fewer bins on a small test set.
MIN_PER_BIN = 25

#: Points at which a t-conditioned bridge's fidelity is reported (on
#: `keras_bridge.bridges.CONDITIONED_GRID`, so the teachers exist).
CONDITIONED_FIDELITY_POINTS = (0.3, DEFAULT_POINT, 0.7)


#: The most subsets of k modes a DE-k row averages over (drawn with a
#: fixed seed beyond that).
MAX_SUBSETS = 30


def mode_subsets(num_modes: int, k: int) -> list:
    """The subsets of ``k`` of ``num_modes`` modes whose mean score is the
    expected DE-k: all of them, or `MAX_SUBSETS` drawn with a fixed seed.

    Example:

    >>> mode_subsets(3, 2)
    [(0, 1), (0, 2), (1, 2)]
    """
    subsets = list(itertools.combinations(range(num_modes), k))
    if len(subsets) <= MAX_SUBSETS:
        return subsets
    chosen = np.random.default_rng(k).choice(
        len(subsets), MAX_SUBSETS, replace=False
    )
    return [subsets[i] for i in sorted(chosen)]


def _configurations(modes, bridges, anchor: int = 0, shared=()) -> list:
    """(name, members) of every row; ``modes`` and ``bridges`` are the
    ensemble's `ModeMember` and `BridgeMember` lists, ``shared`` its
    `SharedMember` (if any); "Single" rows are built on mode ``anchor``.
    ``members`` is a list of member lists for a row that is the mean of
    several ensembles (DE-k: every subset of k modes)."""
    single = [ModeMember(anchor)]
    rows = [(f"mode {m.index}", [m]) for m in modes]
    for k in range(1, len(modes) + 1):
        subsets = mode_subsets(len(modes), k)
        rows.append((f"DE-{k}", [[modes[i] for i in s] for s in subsets]))
    fixed = [b for b in bridges if not b.conditioned]
    type1 = [
        b
        for b in fixed
        if b.kind == "type1" and b.pair[0] == anchor and not b.shared
    ]
    rows += [
        (f"Single + {k} Type I", single + type1[:k])
        for k in range(1, len(type1) + 1)
    ]
    heads = [b for b in fixed if b.shared]
    rows += [
        (f"Shared trunk + {k} Type I" if k else "Shared trunk",
         list(shared) + heads[:k])
        for k in range(len(heads) + 1)
        if shared
    ]  # fmt: skip
    type2 = [b for b in fixed if b.kind == "type2"]
    for m in range(2, len(modes) + 1):
        # A row group per ensemble size that brings new Type II bridges.
        if not [b for b in type2 if max(b.pair) == m - 1]:
            continue
        inside = [b for b in type2 if max(b.pair) < m]
        rows += [
            (f"DE-{m} + {n} Type II", modes[:m] + inside[:n])
            for n in range(1, len(inside) + 1)
        ]
    conditioned = [
        b
        for b in bridges
        if b.conditioned
        and b.kind == "type1"
        and b.pair[0] == anchor
        and not b.shared
    ]
    rows += [
        (f"Single + {k} t-conditioned (t=0.5)", single + conditioned[:k])
        for k in range(1, len(conditioned) + 1)
    ]
    return rows


def fidelity_members(bridges) -> list:
    """The members whose fidelity the report gives: each fixed bridge, and
    each conditioned one at `CONDITIONED_FIDELITY_POINTS`."""
    found = []
    for bridge in bridges:
        if not isinstance(bridge, BridgeMember):
            continue
        if bridge.conditioned:
            found += [
                dataclasses.replace(bridge, at=r)
                for r in CONDITIONED_FIDELITY_POINTS
            ]
        else:
            found.append(bridge)
    return found


def predict_outputs(data, outputs: dict) -> dict:
    """Streams ``data`` once: the outputs of each function on every batch,
    and the labels, concatenated. Inputs are never kept, only outputs.

    One pass serves every model, so the outputs line up with the labels
    even for a dataset that reshuffles each time it is read.

    Args:
        data: a dataset of ``(x, y)`` or ``x`` batches, or ``(x, y)``
            arrays.
        outputs: dict from name to a function of a batch of inputs that
            returns a NumPy array, e.g. `batch_predictor` of a model.

    Returns:
        Dict from each name to its outputs, and ``"labels"`` (None when
        ``data`` has none).

    Example:

    >>> found = predict_outputs(
    ...     (np.ones((5, 2)), np.arange(5)), {"sum": lambda x: np.sum(x, 1)}
    ... )
    >>> found["sum"].tolist(), found["labels"].tolist()
    ([2.0, 2.0, 2.0, 2.0, 2.0], [0, 1, 2, 3, 4])
    """
    if isinstance(data, tuple):
        data = tf.data.Dataset.from_tensor_slices(data).batch(PREDICT_BATCH)
    found = {name: [] for name in outputs}
    labels = []
    for batch in data:
        x, y = batch if isinstance(batch, tuple) else (batch, None)
        for name, output in outputs.items():
            found[name].append(np.asarray(output(x)))
        if y is not None:
            labels.append(np.asarray(y))
    found = {name: np.concatenate(parts) for name, parts in found.items()}
    found["labels"] = np.concatenate(labels) if labels else None
    return found


#: Batch size of `predict_outputs` for arrays.
PREDICT_BATCH = 256


def batch_predictor(model, output=None):
    """A function of a batch of inputs that returns ``model``'s outputs
    (its output ``output`` when given) as NumPy arrays: an output
    function for `predict_outputs`.

    `keras.Model.predict_on_batch` traces its step for the first batch's
    shape, then again for a smaller last batch; this traces once, for
    the model's input with any batch size. Inputs are cast to the
    model's input dtype, as Keras does.

    Args:
        model: a `keras.Model` with one input, called with
            ``training=False``.
        output: the key of the output to return, for a model whose
            outputs are a dict; None for all of them.

    Example:

    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> predict = batch_predictor(model)
    >>> predict(np.ones((4, 3))).shape, predict(np.ones((1, 3))).shape
    ((4, 2), (1, 2))
    """
    (spec,) = model.inputs

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, spec.dtype)])
    def predict(x):
        outputs = model(x, training=False)
        return outputs if output is None else outputs[output]

    def call(x):
        outputs = predict(tf.cast(x, spec.dtype))
        return keras.tree.map_structure(np.asarray, outputs)

    return call


@dataclasses.dataclass
class _Outputs:
    """One data set's per-example outputs: the scored members'
    probabilities, the teachers' logits by ``(pair, r)``, the labels."""

    probs: np.ndarray
    logits: dict
    labels: np.ndarray


def _stream(data, predictors, teachers=()) -> _Outputs:
    """The outputs on ``data`` of ``predictors["members"]`` and of the
    teachers ``teachers`` (keys of ``predictors``)."""
    found = predict_outputs(
        data,
        {"members": predictors["members"]}
        | {key: predictors[key] for key in teachers},
    )
    logits = {key: found[key] for key in teachers}
    return _Outputs(found["members"], logits, found["labels"])


def evaluate(
    members, build_model, count_flops, teachers, base_flops, data, anchor=0
):
    """Builds the `EnsembleReport` of an ensemble.

    Args:
        members: the ensemble's members (`ModeMember`, `SharedMember`,
            then `BridgeMember`), in order.
        build_model: ``build_model(members)`` returns the inference model
            of those members at temperature 1.
        count_flops: ``count_flops(members)`` returns a function that
            gives the FLOPs of that model for any subset of ``members``
            (`keras_bridge.inference.member_flops`).
        teachers: dict from ``(pair, r)`` to the curve network at r, for
            every bridge in `fidelity_members` and every Type I point.
        base_flops: FLOPs of one backbone pass.
        data: dict of ``test`` (labelled data to score),
            ``calibration`` (labelled data for temperature scaling and
            the bridges' checks, or None) and ``ood`` (inputs from
            another distribution, or None); each a dataset of batches or
            arrays, read once (`predict_outputs`): only the per-example
            outputs are kept, never the inputs.
        anchor: the mode of the "Single + k" rows.

    Returns:
        An `EnsembleReport`.
    """
    modes = [m for m in members if isinstance(m, ModeMember)]
    shared = [m for m in members if isinstance(m, SharedMember)]
    bridges = [m for m in members if isinstance(m, BridgeMember)]
    scored = modes + shared + fidelity_members(bridges)
    # Each traced once, for every data set.
    predictors = {
        "members": batch_predictor(build_model(scored), "member_probabilities")
    } | {key: batch_predictor(teacher) for key, teacher in teachers.items()}
    test = _stream(data["test"], predictors, teachers)
    y, test_probs = test.labels, test.probs
    calibration = None
    if data.get("calibration") is not None:
        needed = {
            (m.pair, m.t)
            for m in fidelity_members(bridges)
            if m.at in (None, DEFAULT_POINT)
        } | {(b.pair, b.point) for b in _type1_points(anchor, bridges)}
        calibration = _stream(data["calibration"], predictors, needed)
    val_probs = None if calibration is None else calibration.probs
    ood_probs = None
    if data.get("ood") is not None:
        ood_probs = _stream(data["ood"], predictors).probs
    index = {m: i for i, m in enumerate(scored)}
    count = count_flops(list(dict.fromkeys([*members, *scored])))

    def cost(chosen) -> float:
        """FLOPs of the inference model of ``chosen`` relative to one
        backbone pass."""
        return count(chosen) / base_flops

    # A conditioned bridge in a row is evaluated at the default point.
    index.update(
        {
            m.base: index[m]
            for m in scored
            if isinstance(m, BridgeMember) and m.at == DEFAULT_POINT
        }
    )
    bridge_rows = _bridge_fidelity(scored, test, index, cost)
    if calibration is not None:
        selected = validation_selection(
            members, index, val_probs, calibration.labels
        )
        _check_bridges(bridge_rows, index, calibration, selected)
    fidelity = {
        row["member"].base: row
        for row in bridge_rows
        if row["member"].at in (None, DEFAULT_POINT)
    }

    def mean_of(probs, chosen):
        return probs[:, [index[m] for m in chosen]].mean(axis=1)

    def scores(chosen):
        val_p = None if val_probs is None else mean_of(val_probs, chosen)
        val_labels = None if calibration is None else calibration.labels
        row = _score(mean_of(test_probs, chosen), y, val_p, val_labels)
        if ood_probs is not None:
            columns = [index[m] for m in chosen]
            row.update(_ood(test_probs[:, columns], ood_probs[:, columns]))
        return row

    rows = []
    for name, chosen in _configurations(modes, bridges, anchor, shared):
        draws = chosen if isinstance(chosen[0], list) else [chosen]
        row = {"name": name, "members": len(draws[0])}
        row["flops"] = cost(draws[0])
        row.update(_mean_scores([scores(draw) for draw in draws]))
        if len(draws) > 1:
            row["subsets"] = len(draws)
        bridged = [fidelity[m] for m in draws[0] if m in fidelity]
        if bridged:
            row["agreement"] = float(np.mean([b["agreement"] for b in bridged]))
            row["kl"] = float(np.mean([b["kl"] for b in bridged]))
        rows.append(row)
    rows += _curve_point_rows(anchor, bridges, index, test, calibration)
    _add_dee(rows)
    sources = {b.pair[0] for b in bridges if b.shared}
    _add_captured(rows, anchor, sources.pop() if len(sources) == 1 else None)
    for row in bridge_rows:
        row.pop("member")
    return EnsembleReport(rows, bridge_rows)


def _mean_scores(found) -> dict:
    """The mean of several configurations' scores (the reliability
    diagram of the first: bins do not average)."""
    if len(found) == 1:
        return found[0]
    mean = dict(found[0])
    for key, value in found[0].items():
        if isinstance(value, float):
            mean[key] = float(np.mean([f[key] for f in found]))
    return mean


def _add_captured(rows, anchor: int, shared_source=None) -> None:
    """The ``captured`` column: the share of the curve points' cNLL gain
    over the single network that k bridges reach, ``(cNLL(Single) -
    cNLL(row)) / (cNLL(Single) - cNLL(Single + k curve points))``; for
    shared-trunk rows only when the trunk is a copy of the anchor
    (``shared_source``)."""
    prefixes = ("Single + ",)
    if shared_source == anchor:
        prefixes += ("Shared trunk + ",)
    by_name = {row["name"]: row for row in rows}
    single = by_name.get(f"mode {anchor}", {}).get("cnll")
    if single is None:
        return
    for row in rows:
        for prefix in prefixes:
            if not (row["name"].startswith(prefix) and "Type I" in row["name"]):
                continue
            k = row["name"][len(prefix) :].split(" ")[0]
            points = by_name.get(f"Single + {k} curve points", {}).get("cnll")
            if points is not None and single - points > 0:
                row["captured"] = (single - row["cnll"]) / (single - points)


def _ood(test_members, ood_members) -> dict:
    """OOD detection of a configuration by its two uncertainty outputs."""
    row = {}
    for key, score in (("entropy", _entropy_of), ("mi", _mutual_information)):
        found = metrics_lib.ood_detection(
            score(test_members), score(ood_members)
        )
        row[f"auroc_{key}"] = found["auroc"]
        row[f"fpr95_{key}"] = found["fpr95"]
    return row


def _entropy_of(member_probs):
    return metrics_lib.entropy(member_probs.mean(axis=1))


def _mutual_information(member_probs):
    return keras.ops.convert_to_numpy(mutual_information(member_probs))


#: A bridge that agrees with its teacher less often than this on
#: validation data gets a low-fidelity ``note`` in the report.
MIN_AGREEMENT = 0.95


def validation_selection(members, index, val_probs, labels) -> set:
    """The members `keras_bridge.metrics.select_members` picks on the
    validation probabilities (as `BridgeEnsemble.select_members` does):
    a bridge only once the networks it reads are picked."""
    columns = [index[m] for m in members]
    requires = [
        [members.index(source_member(i)) for i in m.sources]
        if isinstance(m, BridgeMember)
        else []
        for m in members
    ]
    chosen = metrics_lib.select_members(
        val_probs[:, columns], labels, requires=requires
    )
    return {members[i] for i in chosen}


def _check_bridges(bridge_rows, index, calibration, selected):
    """Flags each bridge that does not pay off: its addition to the modes
    it reads worsens their validation cNLL by more than twice its standard
    error (the per-input NLL differences' standard error, so that a small
    validation set does not flag noise) and validation selection
    (``selected``, `validation_selection`) leaves it out, so the flag and
    `BridgeEnsemble.select_members` never disagree. A bridge that agrees
    with its teacher on less than `MIN_AGREEMENT` of the validation inputs
    gets a ``note`` saying so: low fidelity, which is no harm by itself."""
    val_probs, y_val = calibration.probs, calibration.labels
    for row in bridge_rows:
        member = row["member"]
        if member.at not in (None, DEFAULT_POINT):
            continue
        teacher = calibration.logits[(member.pair, member.t)].argmax(axis=1)
        probs = val_probs[:, index[member]]
        row["val_agreement"] = float(np.mean(probs.argmax(1) == teacher))
        sources = [index[source_member(i)] for i in member.sources]
        before = val_probs[:, sources].mean(axis=1)
        after = val_probs[:, sources + [index[member]]].mean(axis=1)
        change = _calibrated_nlls(after, y_val) - _calibrated_nlls(
            before, y_val
        )
        row["val_cnll_change"] = float(change.mean())
        row["val_cnll_change_se"] = float(
            change.std(ddof=1) / np.sqrt(len(change))
        )
        row["selected"] = member.base in selected
        row["note"] = (
            f"low fidelity: agrees with its teacher on "
            f"{row['val_agreement']:.1%} of validation inputs (< "
            f"{MIN_AGREEMENT:.0%})"
            if row["val_agreement"] < MIN_AGREEMENT
            else None
        )
        harm = row["val_cnll_change"] > 2 * row["val_cnll_change_se"]
        row["flag"] = (
            "worsens the validation cNLL of the modes it reads by "
            f"{row['val_cnll_change']:.4f} (standard error "
            f"{row['val_cnll_change_se']:.4f}), and validation selection "
            "leaves it out"
            if harm and not row["selected"]
            else None
        )


def _calibrated_nlls(probs, labels) -> np.ndarray:
    """Per-input NLL after temperature scaling fitted on the same data."""
    t = metrics_lib.fit_temperature(probs, labels)
    scaled = metrics_lib.temperature_scale(probs, t)
    picked = scaled[np.arange(len(labels)), np.asarray(labels)]
    return -np.log(np.clip(picked, metrics_lib.EPSILON, 1.0))


def _score(test_p, y, val_p, val_labels) -> dict:
    row = {
        "accuracy": metrics_lib.accuracy(test_p, y),
        "nll": metrics_lib.nll(test_p, y),
        "ece": metrics_lib.ece(test_p, y, RELIABILITY_BINS),
        "brier": metrics_lib.brier(test_p, y),
    }
    shown = test_p
    if val_p is not None:
        t = metrics_lib.fit_temperature(val_p, val_labels)
        shown = metrics_lib.temperature_scale(test_p, t)
        row.update(
            temperature=t,
            cnll=metrics_lib.nll(shown, y),
            cece=metrics_lib.ece(shown, y, RELIABILITY_BINS),
            cbrier=metrics_lib.brier(shown, y),
        )
    # The diagram shows what a user would serve: the calibrated mean
    # when a temperature could be fitted.
    num_bins = max(1, min(RELIABILITY_BINS, len(y) // MIN_PER_BIN))
    row["reliability"] = {
        "calibrated": val_p is not None,
        **metrics_lib.reliability_bins(shown, y, num_bins, "quantile"),
    }
    return row


def _type1_points(anchor, bridges) -> list:
    """The Type I bridges on the anchor whose curve points are reference
    rows, one per point (frozen and shared-trunk bridges may imitate the
    same points)."""
    type1 = [
        b
        for b in bridges
        if b.kind == "type1" and b.pair[0] == anchor and not b.conditioned
    ]
    return list({(b.pair, b.point): b for b in type1}.values())


def _curve_point_rows(anchor, bridges, index, test, calibration) -> list:
    """Reference rows: the curve points the Type I bridges imitate, at
    full cost (each point predicted once; the rows are running means)."""
    type1 = _type1_points(anchor, bridges)
    if not type1:
        return []

    def points(found):
        return [softmax(found.logits[(b.pair, b.point)]) for b in type1]

    anchor = index[ModeMember(anchor)]
    test_points = points(test)
    val_points = points(calibration) if calibration is not None else None
    val_labels = None if calibration is None else calibration.labels
    rows = []
    for k in range(1, len(type1) + 1):
        test_p = np.mean([test.probs[:, anchor]] + test_points[:k], axis=0)
        val_p = None
        if val_points is not None:
            val_p = np.mean(
                [calibration.probs[:, anchor]] + val_points[:k], axis=0
            )
        row = {
            "name": f"Single + {k} curve points",
            "members": k + 1,
            "flops": float(k + 1),
        }
        row.update(_score(test_p, test.labels, val_p, val_labels))
        rows.append(row)
    return rows


def _bridge_fidelity(scored, test, index, cost) -> list:
    y, probs, rows, costs, accuracy = test.labels, test.probs, [], {}, {}
    for member in scored:
        if not isinstance(member, BridgeMember):
            continue
        key = (member.pair, member.t)
        if key not in accuracy:
            logits = test.logits[key]
            accuracy[key] = (logits, metrics_lib.accuracy(softmax(logits), y))
        teacher_logits, teacher_accuracy = accuracy[key]
        member_probs = probs[:, index[member]]
        log_probs = np.log(np.clip(member_probs, metrics_lib.EPSILON, 1.0))
        fidelity = teacher_fidelity(teacher_logits, log_probs)
        if member.base not in costs:
            costs[member.base] = _bridge_flops(member, cost)
        rows.append(
            {
                "member": member,
                "name": member.base.name,
                "point": float(member.t),
                "agreement": fidelity["agreement"],
                "kl": fidelity["kl"],
                "accuracy": metrics_lib.accuracy(member_probs, y),
                "teacher_accuracy": teacher_accuracy,
                "flops": costs[member.base],
            }
        )
    return rows


def _bridge_flops(member, cost) -> float:
    """Extra FLOPs of a bridge on top of the trunks it reads, relative to
    one backbone pass (``cost``: of a list of members)."""
    sources = [source_member(i) for i in member.sources]
    return cost(sources + [member]) - cost(sources)


def _add_dee(rows) -> None:
    ensembles = sorted(
        (
            r
            for r in rows
            if r["name"].startswith("DE-") and "+" not in r["name"]
        ),
        key=lambda r: r["members"],
    )
    accuracies = [r["accuracy"] for r in ensembles]
    cnlls = [r.get("cnll") for r in ensembles]
    for row in rows:
        row["dee_accuracy"] = metrics_lib.deep_ensemble_equivalent(
            row["accuracy"], accuracies, higher_is_better=True
        )
        if row.get("cnll") is not None and None not in cnlls:
            row["dee_cnll"] = metrics_lib.deep_ensemble_equivalent(
                row["cnll"], cnlls
            )
