"""Ensemble metrics on predicted probabilities (NumPy in, floats out).

All functions take ``probabilities`` of shape ``(n, num_classes)`` and
integer ``labels`` of shape ``(n,)``.
"""

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


def ece(probabilities, labels, num_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins.

    ``sum_b |B_b| / n * |accuracy(B_b) - confidence(B_b)|`` over bins of
    the top-class confidence; a bin holds confidences in ``(lo, hi]``.

    Example:

    >>> round(ece([[0.8, 0.2], [0.6, 0.4]], [0, 1], num_bins=15), 4)
    0.5
    """
    probabilities, labels = _check(probabilities, labels)
    confidence = probabilities.max(axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        if in_bin.any():
            gap = abs(correct[in_bin].mean() - confidence[in_bin].mean())
            total += in_bin.mean() * gap
    return float(total)


def temperature_scale(probabilities, temperature: float) -> np.ndarray:
    """Rescales probabilities as ``softmax(log(p) / temperature)``."""
    logits = np.log(np.clip(np.asarray(probabilities, "float64"), EPSILON, 1))
    logits = logits / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities, labels) -> float:
    """The temperature minimising NLL of ``temperature_scale`` on the data.

    A one-dimensional bounded search (SciPy's Brent method) over
    ``log(temperature)`` in ``[log 0.05, log 20]``.

    Example:

    >>> temperature = fit_temperature(val_probabilities, val_labels)
    """
    from scipy.optimize import minimize_scalar

    probabilities, labels = _check(probabilities, labels)
    result = minimize_scalar(
        lambda log_t: nll(
            temperature_scale(probabilities, np.exp(log_t)), labels
        ),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def deep_ensemble_equivalent(
    score: float, ensemble_scores, higher_is_better: bool = False
) -> float:
    """Deep-ensemble equivalent: how many full members give this score.

    ``ensemble_scores[k]`` is the score of a deep ensemble of ``k + 1``
    members. The result is the piecewise-linear interpolation of the
    member count at ``score``; below DE-1 it is 1 or less (extrapolated
    on the first segment, floored at 0), above the largest it is that
    size (a lower bound).

    Example:

    >>> deep_ensemble_equivalent(0.25, [0.30, 0.20, 0.15])
    1.5
    """
    scores = np.asarray(ensemble_scores, dtype="float64")
    if not higher_is_better:
        scores, score = -scores, -score
    sizes = np.arange(1, len(scores) + 1, dtype="float64")
    if len(scores) == 1 or score <= scores[0]:
        if len(scores) == 1 or scores[1] == scores[0]:
            return 1.0 if score >= scores[0] else 0.0
        slope = 1.0 / (scores[1] - scores[0])
        return float(max(0.0, 1.0 + (score - scores[0]) * slope))
    for k in range(1, len(scores)):
        lo, hi = scores[k - 1], scores[k]
        if score <= hi:
            if hi <= lo:
                return float(sizes[k - 1])
            return float(sizes[k - 1] + (score - lo) / (hi - lo))
    return float(sizes[-1])
