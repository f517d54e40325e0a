"""Ensemble metrics on predicted probabilities (NumPy in, floats out).

All functions take ``probabilities`` of shape ``(n, num_classes)`` and
integer ``labels`` of shape ``(n,)``, except `pareto_front`, which picks
the trials of a bridge search that trade cost for fidelity best.
"""

import math

import numpy as np

#: Floor of a probability before its log, everywhere in keras-bridge.
EPSILON = 1e-12


def _check(probabilities, labels):
    probabilities = np.asarray(probabilities, dtype="float64")
    labels = np.asarray(labels).astype("int64").reshape(-1)
    if probabilities.ndim != 2 or len(probabilities) != len(labels):
        raise ValueError(
            "`probabilities` must have shape (n, num_classes) with n = "
            f"len(labels); received shape {probabilities.shape} and "
            f"{len(labels)} labels."
        )
    return probabilities, labels


def accuracy(probabilities, labels) -> float:
    """Fraction of inputs whose most probable class is the label.

    Example:

    >>> accuracy([[0.9, 0.1], [0.3, 0.7]], [0, 0])
    0.5
    """
    probabilities, labels = _check(probabilities, labels)
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def nll(probabilities, labels) -> float:
    """Mean negative log-likelihood of the labels (natural log).

    Example:

    >>> round(nll([[0.5, 0.5]], [1]), 4)
    0.6931
    """
    probabilities, labels = _check(probabilities, labels)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, EPSILON, 1.0))))


def brier(probabilities, labels) -> float:
    """Brier score: mean over inputs of the squared distance to one-hot.

    Example:

    >>> brier([[1.0, 0.0]], [1])
    2.0
    """
    probabilities, labels = _check(probabilities, labels)
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def _calibration_bins(probabilities, labels, num_bins):
    """Per equal-width bin of the top-class confidence: the count, the
    number of correct predictions and the sum of confidences. A bin holds
    confidences in ``(lo, hi]``. Shared by `ece` and `reliability_bins`
    so that the two always agree."""
    probabilities, labels = _check(probabilities, labels)
    confidence = probabilities.max(axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        bins.append(
            (
                int(in_bin.sum()),
                float(correct[in_bin].sum()),
                float(confidence[in_bin].sum()),
            )
        )
    return edges, bins, len(labels)


def ece(probabilities, labels, num_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins.

    ``sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|`` over bins of
    the top-class confidence; a bin holds confidences in ``(lo, hi]``.

    Example:

    One right answer at confidence 0.8 and one wrong at 0.6, in two
    bins: ``(0.2 + 0.6) / 2``.

    >>> round(ece([[0.8, 0.2], [0.6, 0.4]], [0, 1], num_bins=15), 4)
    0.4
    """
    _, bins, n = _calibration_bins(probabilities, labels, num_bins)
    total = 0.0
    for count, correct, confidence in bins:
        if count:
            total += count / n * abs(correct / count - confidence / count)
    return float(total)


def reliability_bins(
    probabilities, labels, num_bins: int = 15, strategy: str = "uniform"
) -> dict:
    """The data of a reliability diagram: accuracy per confidence bin.

    With ``strategy="uniform"`` the bins are those of `ece` (equal width,
    ``(lo, hi]``), so ``sum_b count_b / n * |accuracy_b - confidence_b|``
    is the ECE. With ``"quantile"`` each bin holds the same number of
    inputs (give or take one), in order of confidence: on a confident
    model and a small test set, equal-width bins put nearly every input
    in the top bin, equal-count bins spread them out.

    Args:
        probabilities: ``(n, num_classes)`` predicted probabilities.
        labels: ``(n,)`` integer labels.
        num_bins: number of bins (``"quantile"``: at most ``n``).
        strategy: ``"uniform"`` (equal-width bins over ``[0, 1]``) or
            ``"quantile"`` (equal-count bins).

    Returns:
        A JSON-ready dict of lists: ``edges`` (``num_bins + 1`` floats),
        and per bin ``confidence`` (mean top-class confidence),
        ``accuracy`` (fraction correct; both None for an empty bin) and
        ``count`` (inputs in the bin).

    Example:

    >>> bins = reliability_bins([[0.8, 0.2], [0.6, 0.4]], [0, 1], 2)
    >>> bins["count"], bins["accuracy"], bins["confidence"]
    ([0, 2], [None, 0.5], [None, 0.7])
    >>> bins = reliability_bins([[0.8, 0.2], [0.6, 0.4]], [0, 1], 2,
    ...                         strategy="quantile")
    >>> bins["count"], bins["accuracy"], bins["confidence"]
    ([1, 1], [0.0, 1.0], [0.6, 0.8])
    """
    if strategy == "uniform":
        edges, bins, _ = _calibration_bins(probabilities, labels, num_bins)
    elif strategy == "quantile":
        edges, bins = _quantile_bins(probabilities, labels, num_bins)
    else:
        raise ValueError(
            "`strategy` must be 'uniform' or 'quantile'; received "
            f"strategy={strategy!r}."
        )
    return {
        "edges": edges.tolist(),
        "confidence": [s / c if c else None for c, _, s in bins],
        "accuracy": [k / c if c else None for c, k, _ in bins],
        "count": [c for c, _, _ in bins],
    }


def _quantile_bins(probabilities, labels, num_bins):
    """As `_calibration_bins`, with bins of equal count in order of
    confidence; the edges are the lowest confidence of each bin and the
    highest of the last."""
    probabilities, labels = _check(probabilities, labels)
    if not len(labels):
        raise ValueError("`probabilities` must hold at least one input.")
    confidence = probabilities.max(axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    order = np.argsort(confidence, kind="stable")
    chunks = np.array_split(order, max(1, min(num_bins, len(order))))
    bins = [
        (len(c), float(correct[c].sum()), float(confidence[c].sum()))
        for c in chunks
    ]
    edges = [confidence[c[0]] for c in chunks] + [confidence[order[-1]]]
    return np.asarray(edges, dtype="float64"), bins


def temperature_scale(probabilities, temperature: float) -> np.ndarray:
    """Rescales probabilities as ``softmax(log(p) / temperature)``."""
    logits = np.log(np.clip(np.asarray(probabilities, "float64"), EPSILON, 1))
    logits = logits / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


#: The interval `fit_temperature` searches.
TEMPERATURE_BOUNDS = (0.05, 20.0)


def fit_temperature(probabilities, labels) -> float:
    """The temperature minimising NLL of ``temperature_scale`` on the data.

    A one-dimensional bounded search (SciPy's Brent method) over
    ``log(temperature)`` in `TEMPERATURE_BOUNDS`, ``[0.05, 20]``.

    Example:

    Three right answers in four at confidence 0.9 call for confidence
    0.75: ``log(0.9 / 0.1) / T = log(0.75 / 0.25)`` gives ``T = 2``.

    >>> round(fit_temperature([[0.9, 0.1]] * 4, [0, 0, 0, 1]), 3)
    2.0
    """
    from scipy.optimize import minimize_scalar

    probabilities, labels = _check(probabilities, labels)
    result = minimize_scalar(
        lambda log_t: nll(
            temperature_scale(probabilities, np.exp(log_t)), labels
        ),
        bounds=tuple(np.log(TEMPERATURE_BOUNDS)),
        method="bounded",
    )
    return float(np.exp(result.x))


def deep_ensemble_equivalent(
    score: float, ensemble_scores, higher_is_better: bool = False
) -> float:
    """Deep-ensemble equivalent: how many full members give this score.

    ``ensemble_scores[k]`` is the score of a deep ensemble of ``k + 1``
    members. The result is the piecewise-linear interpolation of the
    member count at ``score`` on the running best of those scores, so a
    larger ensemble that happens to score worse than a smaller one (small
    test sets) does not turn the curve back. Below DE-1 it is less than 1,
    extrapolated along the first rising segment and floored at 0; a score
    that a size reaches exactly gets the first size that reaches it, and
    above the best the result is the largest size (a lower bound).

    Example:

    >>> deep_ensemble_equivalent(0.25, [0.30, 0.20, 0.15])
    1.5
    >>> deep_ensemble_equivalent(0.96, [0.975, 0.972, 0.978],
    ...                          higher_is_better=True)
    0.0
    """
    scores = np.asarray(ensemble_scores, dtype="float64")
    if not higher_is_better:
        scores, score = -scores, -score
    best = np.maximum.accumulate(scores)
    if score < best[0]:
        rising = np.flatnonzero(best > best[0])
        if not rising.size:
            return 0.0
        k = rising[0]
        slope = k / (best[k] - best[0])
        return float(max(0.0, 1.0 + (score - best[0]) * slope))
    k = int(np.searchsorted(best, score, side="left"))
    if k == len(best):
        return float(k)
    if best[k] == score:
        return float(k + 1)
    return float(k + (score - best[k - 1]) / (best[k] - best[k - 1]))


def entropy(probabilities) -> np.ndarray:
    """Entropy (nats) of each row of ``probabilities``.

    Example:

    >>> entropy([[0.5, 0.5], [1.0, 0.0]]).round(4).tolist()
    [0.6931, 0.0]
    """
    p = np.asarray(probabilities, dtype="float64")
    return 0.0 - (p * np.log(np.clip(p, EPSILON, 1.0))).sum(axis=-1)


def ood_detection(in_scores, out_scores) -> dict:
    """How well a score separates out-of-distribution inputs.

    Higher scores should mean "more likely out of distribution" (e.g.
    predictive entropy or mutual information). Returns ``auroc`` (area
    under the ROC curve of OOD vs in-distribution; 0.5 is chance, via
    scikit-learn) and ``fpr95``: the fraction of in-distribution inputs
    flagged when the threshold flags 95 % of the OOD inputs.

    Example:

    >>> ood_detection([0.1, 0.2, 0.3], [0.25, 0.4])["auroc"]
    0.8333333333333334
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    in_scores = np.asarray(in_scores, dtype="float64").reshape(-1)
    out_scores = np.asarray(out_scores, dtype="float64").reshape(-1)
    labels = np.r_[np.zeros(len(in_scores)), np.ones(len(out_scores))]
    scores = np.r_[in_scores, out_scores]
    fpr, tpr, _ = roc_curve(labels, scores)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "fpr95": float(fpr[np.searchsorted(tpr, 0.95, side="left")]),
    }


def calibrated_nll(val_probs, val_labels, probs, labels) -> float:
    """NLL of ``probs`` after temperature scaling fitted on validation."""
    t = fit_temperature(val_probs, val_labels)
    return nll(temperature_scale(probs, t), labels)


def select_members(
    member_probs, labels, max_members=None, requires=None
) -> list:
    """Greedy forward ensemble selection on calibrated NLL.

    Starts from the best single member and adds, one at a time, the member
    whose addition lowers the temperature-scaled NLL of the probability
    mean most (Caruana et al., 2004, without replacement), while it keeps
    lowering it. Temperatures are fitted on the same data.

    Args:
        member_probs: ``(n, members, num_classes)`` probabilities.
        labels: ``(n,)`` integer labels.
        max_members: stop at this many; default no limit.
        requires: optional list giving, for each member, the members that
            must be chosen before it can be (a bridge is cheap only once
            the modes it reads run anyway); default none.

    Returns:
        The chosen member indices, in the order chosen.

    Example:

    Member 2 is wrong on three of the four inputs and is left out:

    >>> member_probs = [
    ...     [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]],
    ...     [[0.4, 0.6], [0.3, 0.7], [0.6, 0.4]],
    ...     [[0.7, 0.3], [0.8, 0.2], [0.3, 0.7]],
    ...     [[0.2, 0.8], [0.45, 0.55], [0.9, 0.1]],
    ... ]
    >>> select_members(member_probs, [0, 1, 0, 1])
    [0, 1]

    When member 0 may only follow member 1 (say, a bridge reading mode 1),
    selection starts from member 1:

    >>> select_members(member_probs, [0, 1, 0, 1], requires=[[1], [], []])
    [1, 0]
    """
    member_probs = np.asarray(member_probs, dtype="float64")
    count = member_probs.shape[1]
    limit = count if max_members is None else min(count, max_members)

    def score(chosen):
        mean = member_probs[:, chosen].mean(axis=1)
        return calibrated_nll(mean, labels, mean, labels)

    requires = [()] * count if requires is None else requires
    if len(requires) != count:
        raise ValueError(
            f"`requires` must have one entry per member ({count}); "
            f"received {len(requires)}."
        )
    chosen, best = [], np.inf
    while len(chosen) < limit:
        candidates = [
            i
            for i in range(count)
            if i not in chosen and all(j in chosen for j in requires[i])
        ]
        if not candidates:
            break
        scores = [score(chosen + [i]) for i in candidates]
        if min(scores) >= best - 1e-6:
            break
        best = min(scores)
        chosen.append(candidates[int(np.argmin(scores))])
    return chosen


def pareto_front(trials) -> list:
    """The completed trials that no other beats on both cost and fidelity.

    A search over bridge architectures trades FLOPs for fidelity (the
    validation KL to the teacher); the trials worth keeping are those
    that no other completed trial matches or beats on both while beating
    it on one. Trials that are not ``"COMPLETED"``, or lack a finite
    ``flops`` or ``val_kl``, take no part. Needs no matplotlib, so that
    tuning code can use it; `keras_bridge.plots.pareto` draws it.

    Args:
        trials: dicts with keys ``"flops"`` (relative to one backbone),
            ``"val_kl"``, ``"status"`` and ``"trial_id"``.

    Returns:
        The trials (the same dicts) on the front, by increasing FLOPs
        (hence decreasing ``val_kl``). Exact duplicates are all kept.

    Example:

    >>> def trial(trial_id, flops, val_kl, status="COMPLETED"):
    ...     return {"trial_id": trial_id, "flops": flops, "val_kl": val_kl,
    ...             "status": status}
    >>> trials = [trial("a", 0.1, 0.30), trial("b", 0.2, 0.35),
    ...           trial("c", 0.3, 0.10), trial("d", 0.05, None, "FAILED")]
    >>> [trial["trial_id"] for trial in pareto_front(trials)]
    ['a', 'c']
    """
    done = [trial for trial in _checked_trials(trials) if _placed(trial)]

    def beats(a, b):
        no_worse = a["flops"] <= b["flops"] and a["val_kl"] <= b["val_kl"]
        return no_worse and (a["flops"], a["val_kl"]) != (
            b["flops"],
            b["val_kl"],
        )

    front = [t for t in done if not any(beats(o, t) for o in done)]
    return sorted(front, key=lambda t: (t["flops"], t["val_kl"]))


def _checked_trials(trials) -> list:
    trials = list(trials)
    for trial in trials:
        if not isinstance(trial, dict) or "status" not in trial:
            raise ValueError(
                "`trials` must be dicts with keys 'flops', 'val_kl', "
                f"'status' and 'trial_id'; received {trial!r}."
            )
    return trials


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


def _placed(trial) -> bool:
    """A completed trial with both coordinates, so it can be compared."""
    return (
        trial["status"] == "COMPLETED"
        and _finite(trial.get("flops"))
        and _finite(trial.get("val_kl"))
    )


def softmax(logits) -> np.ndarray:
    """Softmax in float64, for scoring."""
    logits = np.asarray(logits, dtype="float64")
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
