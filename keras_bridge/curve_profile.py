"""Accuracy and loss along a path between two modes."""

import keras
import numpy as np

from keras_bridge import metrics as metrics_lib
from keras_bridge import plots
from keras_bridge.metrics import softmax


class CurveProfile:
    """Accuracy and NLL at evenly spaced points of a curve or line.

    Attributes:
        kind: ``"curve"`` (a fitted curve) or ``"line"`` (straight line).
        pair: the two mode indices.
        t: the points.
        accuracy: accuracy at each point.
        nll: negative log-likelihood at each point.

    Example:

    >>> profile = CurveProfile("line", (0, 1), np.array([0.0, 0.5, 1.0]),
    ...     np.array([0.9, 0.2, 0.9]), np.array([0.3, 2.3, 0.5]))
    >>> round(profile.barrier, 6)
    1.9
    """

    def __init__(self, kind, pair, t, accuracy, nll):
        self.kind, self.pair = kind, tuple(pair)
        self.t = np.asarray(t, dtype="float64")
        self.accuracy = np.asarray(accuracy, dtype="float64")
        self.nll = np.asarray(nll, dtype="float64")

    @classmethod
    def measure(
        cls, kind, pair, num_points, data, point_at, verbose=1
    ) -> "CurveProfile":
        """Scores ``point_at(t)`` (a model giving logits) on ``data`` at
        ``num_points`` evenly spaced t, with a progress bar.

        ``data`` is read batch by batch (``(x, y)`` batches with integer
        labels, e.g. a checked `tf.data.Dataset`): only per-batch sums
        are kept, so large data need not fit in memory.
        """
        ts = np.linspace(0.0, 1.0, num_points)
        accuracy, nll = [], []
        progress = keras.utils.Progbar(
            num_points, unit_name="point", verbose=verbose
        )
        for t in ts:
            model = point_at(float(t))
            correct = total_nll = count = 0
            for x, y in data:
                probabilities = softmax(model(x, training=False))
                y = np.asarray(y).reshape(-1)
                correct += metrics_lib.accuracy(probabilities, y) * len(y)
                total_nll += metrics_lib.nll(probabilities, y) * len(y)
                count += len(y)
            accuracy.append(correct / count)
            nll.append(total_nll / count)
            progress.add(1)
        return cls(kind, pair, ts, accuracy, nll)

    @property
    def barrier(self) -> float:
        """Largest NLL along the path minus the mean NLL of its ends."""
        return float(self.nll.max() - (self.nll[0] + self.nll[-1]) / 2)

    def plot(
        self, path=None, metric: str = "nll", ax=None, others=(),
        scored_on=None,
    ):  # fmt: skip
        """Draws the profile against t (needs matplotlib).

        Args:
            path: where to save the figure as a PNG; default not saved.
            metric: ``"nll"`` or ``"accuracy"``.
            ax: a `matplotlib.axes.Axes` to draw into; default a new
                figure.
            others: more `CurveProfile`s for the same axes, e.g. the
                straight line and the fitted curve between two modes.
            scored_on: the data the profiles were measured on, for the
                axis label, e.g. ``"test set"``.

        Returns:
            The `matplotlib.figure.Figure`
            (`keras_bridge.plots.curve_profile`).

        Example:

        >>> t = np.linspace(0.0, 1.0, 5)
        >>> line = CurveProfile("line", (0, 1), t,
        ...     [0.9, 0.6, 0.3, 0.6, 0.9], [0.3, 1.1, 2.2, 1.0, 0.3])
        >>> curve = CurveProfile("curve", (0, 1), t,
        ...     [0.9, 0.9, 0.88, 0.9, 0.9], [0.3, 0.32, 0.35, 0.31, 0.3])
        >>> figure = line.plot(others=[curve])
        >>> [l.get_label() for l in figure.axes[0].get_lines()]
        ['line 0 -> 1', 'curve 0 -> 1']
        """
        return plots.curve_profile(
            [self, *others], path=path, metric=metric, ax=ax,
            scored_on=scored_on,
        )  # fmt: skip

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "pair": list(self.pair),
            "t": self.t.tolist(),
            "accuracy": self.accuracy.tolist(),
            "nll": self.nll.tolist(),
        }

    def __str__(self) -> str:
        lines = [
            f"{self.kind} {self.pair[0]} -> {self.pair[1]}: "
            f"NLL barrier {self.barrier:.4f}",
            f"{'t':>6} {'accuracy':>9} {'nll':>8}",
        ]
        for t, acc, nll in zip(self.t, self.accuracy, self.nll):
            lines.append(f"{t:6.2f} {acc:9.4f} {nll:8.4f}")
        return "\n".join(lines)

    __repr__ = __str__
