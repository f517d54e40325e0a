"""Accuracy and loss along a path between two modes."""


class CurveProfile:
    """Accuracy and NLL at evenly spaced points of a curve or line.

    Attributes:
        kind: ``"curve"`` (a fitted curve) or ``"line"`` (straight line).
        pair: the two mode indices.
        t: the points.
        accuracy: accuracy at each point.
        nll: negative log-likelihood at each point.
    """

    def __init__(self, kind, pair, t, accuracy, nll):
        self.kind, self.pair = kind, pair
        self.t, self.accuracy, self.nll = t, accuracy, nll

    @property
    def barrier(self) -> float:
        """Largest NLL along the path minus the mean NLL of its ends."""
        return float(self.nll.max() - (self.nll[0] + self.nll[-1]) / 2)

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
