"""Figures of keras-bridge results, as PNGs.

Each function draws with matplotlib's object API (`matplotlib.figure.Figure`,
no pyplot state), so it works headless and leaves a caller's figures
alone; it returns the figure, saves it when given a ``path`` and draws into
a caller's ``ax`` when given one. matplotlib is imported only when a
figure is drawn: ``pip install matplotlib`` (or ``keras-bridge[plots]``).
"""

import os
import re

import numpy as np

from keras_bridge.atomic_files import atomic_write
from keras_bridge.metrics import pareto_front

__all__ = [
    "curve_profile",
    "flops_tradeoff",
    "pareto",
    "pareto_front",
    "reliability",
]

#: Resolution of saved PNGs, in dots per inch.
DPI = 150

#: Axis titles of the `EnsembleReport` columns that can be plotted.
METRIC_LABELS = {
    "accuracy": "accuracy",
    "nll": "NLL",
    "ece": "ECE",
    "brier": "Brier score",
    "cnll": "calibrated NLL",
    "cece": "calibrated ECE",
    "cbrier": "calibrated Brier score",
    "dee_accuracy": "DEE (accuracy)",
    "dee_cnll": "DEE (calibrated NLL)",
    "agreement": "agreement with the teachers",
    "kl": "KL to the teachers",
    "auroc_entropy": "OOD AUROC (entropy)",
    "auroc_mi": "OOD AUROC (mutual information)",
    "fpr95_entropy": "OOD FPR at 95% TPR (entropy)",
    "fpr95_mi": "OOD FPR at 95% TPR (mutual information)",
}

#: Rows of a report form families, one line each: (pattern of the row
#: names, the family's label, its group). The names are those of
#: `keras_bridge.evaluation._configurations` and `_curve_point_rows`.
FAMILIES = (
    (r"mode \d+", "single modes", "modes"),
    (r"DE-\d+", "DE-k", "ensemble"),
    (r"Single \+ \d+ Type I", "Single + k Type I", "type1"),
    (
        r"Shared trunk(?: \+ \d+ Type I)?",
        "Shared trunk + k Type I",
        "shared",
    ),
    (r"DE-(?P<m>\d+) \+ \d+ Type II", "DE-{m} + k Type II", "type2"),
    (r"Single \+ \d+ curve points", "Single + k curve points", "reference"),
    (
        r"Single \+ \d+ [rt]-conditioned \([rt]=(?P<r>[\d.]+)\)",
        "Single + k t-conditioned (t={r})",
        "conditioned",
    ),
)

_BRIDGE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
_BRIDGE_COLORS += ("tab:purple", "tab:brown", "tab:pink", "tab:olive")
_BRIDGE_MARKERS = ("o", "^", "D", "v", "P", "X", "<", ">")
_STYLES = {
    "modes": dict(color="0.6", marker="o", linestyle="none", markersize=4),
    "ensemble": dict(color="black", marker="s", linestyle="-"),
    "reference": dict(color="0.45", marker="x", linestyle="--"),
    "other": dict(color="0.3", marker="*", linestyle="none"),
}


def flops_tradeoff(report, path=None, metrics=("accuracy", "cnll"), ax=None):
    """Each metric against the FLOPs it costs: the main figure.

    One panel per metric, x = FLOPs relative to one network. Rows of the
    report form families, one line each, by FLOPs (see `FAMILIES`): deep
    ensembles DE-k in black, the bridge families in colour, the curve
    points they imitate (at full cost) dashed grey, the single modes as
    grey dots. A calibrated metric that the report lacks (no calibration
    data) falls back to the uncalibrated one, e.g. ``"cnll"`` to
    ``"nll"``.

    Args:
        report: an `keras_bridge.report.EnsembleReport`.
        path: where to save the figure as a PNG; default not saved.
        metrics: report columns to plot, one panel each, e.g.
            ``"accuracy"``, ``"cnll"``, ``"cece"`` (keys of
            `METRIC_LABELS`).
        ax: a `matplotlib.axes.Axes` per metric to draw into; default a
            new figure.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> from keras_bridge.report import EnsembleReport
    >>> def row(name, flops, accuracy, nll):
    ...     return {"name": name, "members": round(flops), "flops": flops,
    ...             "accuracy": accuracy, "nll": nll}
    >>> report = EnsembleReport([
    ...     row("DE-1", 1.0, 0.90, 0.35), row("DE-2", 2.0, 0.93, 0.25),
    ...     row("Single + 1 Type I", 1.1, 0.91, 0.31),
    ...     row("Single + 2 Type I", 1.2, 0.92, 0.28)], bridges=[])
    >>> figure = flops_tradeoff(report)
    >>> [axes.get_ylabel() for axes in figure.axes]
    ['accuracy', 'NLL']
    >>> [line.get_label() for line in figure.axes[0].get_lines()]
    ['DE-k', 'Single + k Type I']
    """
    rows = _report_rows(report)
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = [_metric(rows, metric) for metric in metrics]
    if not metrics:
        raise ValueError("`metrics` must name at least one column.")
    families = _families(rows)
    figure, panels = _panels(ax, len(metrics), (4.0 * len(metrics), 3.4))
    for axes, metric in zip(panels, metrics):
        for label, (_, family, style) in families.items():
            family = sorted(family, key=lambda r: (r["flops"], r["members"]))
            axes.plot(
                [r["flops"] for r in family],
                [r[metric] for r in family],
                label=label,
                **style,
            )
        axes.set_xlabel("FLOPs (relative to one network)")
        axes.set_ylabel(METRIC_LABELS[metric])
        axes.grid(alpha=0.3)
    _legend(figure, panels, own_figure=ax is None)
    return _finish(figure, path)


def curve_profile(
    profiles, path=None, metric: str = "nll", ax=None, scored_on=None
):
    """NLL (or accuracy) along paths between modes, against t.

    Draw the straight line and the fitted curves together to see the
    barrier that curve training removes: lines are dashed, curves solid,
    one colour per pair of modes. With both, a second panel shows the
    curves alone on their own scale, so that no curve is flattened under
    the line's barrier (not when drawing into ``ax``).

    Args:
        profiles: a `keras_bridge.CurveProfile` or a list of them.
        path: where to save the figure as a PNG; default not saved.
        metric: ``"nll"`` or ``"accuracy"``.
        ax: a `matplotlib.axes.Axes` to draw into; default a new figure.
        scored_on: the data the profiles were measured on, for the axis
            label, e.g. ``"test set"``.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import numpy as np
    >>> from keras_bridge import CurveProfile
    >>> t = np.linspace(0.0, 1.0, 3)
    >>> line = CurveProfile("line", (0, 1), t, [0.9, 0.4, 0.9], [0.3, 2, 0.3])
    >>> curve = CurveProfile("curve", (0, 1), t, [0.9, 0.9, 0.9], [0.3] * 3)
    >>> figure = curve_profile([line, curve], metric="accuracy",
    ...                        scored_on="test set")
    >>> [axes.get_ylabel() for axes in figure.axes]
    ['accuracy on the test set', 'accuracy on the test set']
    """
    if metric not in ("nll", "accuracy"):
        raise ValueError(
            f"`metric` must be 'nll' or 'accuracy'; received {metric!r}."
        )
    if hasattr(profiles, "kind"):
        profiles = [profiles]
    profiles = list(profiles)
    if not profiles or not all(hasattr(p, "kind") for p in profiles):
        raise ValueError(
            "`profiles` must be a CurveProfile or a non-empty list of "
            f"them; received {profiles!r}."
        )
    curves = [p for p in profiles if p.kind != "line"]
    zoom = ax is None and 0 < len(curves) < len(profiles)
    figure, panels = _panels(ax, 1 + zoom, (5.0 + 4.0 * zoom, 3.4))
    pairs = list(dict.fromkeys(p.pair for p in profiles))
    label = METRIC_LABELS[metric]
    if scored_on:
        label += f" on the {scored_on}"
    for axes, drawn in zip(panels, (profiles, curves)):
        for profile in drawn:
            axes.plot(
                profile.t,
                getattr(profile, metric),
                color=_BRIDGE_COLORS[pairs.index(profile.pair) % 8],
                linestyle="--" if profile.kind == "line" else "-",
                marker="o",
                markersize=3,
                label=f"{profile.kind} {profile.pair[0]} -> {profile.pair[1]}",
            )
        axes.set_xlabel("t (0 and 1: the two modes)")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
    if zoom:
        panels[0].set_title("straight line and curves", fontsize="medium")
        panels[1].set_title("fitted curves only", fontsize="medium")
    _legend(figure, panels, own_figure=ax is None)
    return _finish(figure, path)


def reliability(report, path=None, names=None, ax=None):
    """Reliability diagram: accuracy per confidence bin of chosen rows.

    Each configuration is a line through its bins' (mean confidence,
    accuracy) points; points under the diagonal are overconfident. The
    bins are stored in each row's ``reliability`` entry: equal-count bins
    of the test predictions (of the temperature-scaled mean when the
    report had calibration data), so that a confident model on a small
    test set still gets several bins; the legend gives their number and
    counts. Confidence is on a logit scale (0.9, 0.99, 0.999 equally
    apart), so that bins near 1 do not pile up at (1, 1).

    Args:
        report: an `keras_bridge.report.EnsembleReport`.
        path: where to save the figure as a PNG; default not saved.
        names: row names to draw; default the single model (DE-1) and
            the largest deep ensemble, Type I and Type II rows.
        ax: a `matplotlib.axes.Axes` to draw into; default a new figure.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> import numpy as np
    >>> from keras_bridge import metrics
    >>> from keras_bridge.report import EnsembleReport
    >>> probabilities = np.array([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4]])
    >>> bins = metrics.reliability_bins(probabilities, [0, 0, 1], 3,
    ...                                 strategy="quantile")
    >>> row = {"name": "DE-1", "members": 1, "flops": 1.0, "ece": 0.333,
    ...        "accuracy": 2 / 3, "reliability": {"calibrated": False, **bins}}
    >>> figure = reliability(EnsembleReport([row], bridges=[]))
    >>> [line.get_label() for line in figure.axes[0].get_lines()]
    ['perfect calibration', 'DE-1 (ECE 0.333; 3 bins of 1)']
    """
    rows = _report_rows(report)
    chosen = _reliability_rows(rows, names)
    figure, (axes,) = _panels(ax, 1, (4.8, 5.6))
    points = [_reliability_points(row) for row in chosen]
    low = min(min(x.min(), 0.5) for x, _, _ in points)
    high = max(max(x.max(), 0.99) for x, _, _ in points)
    diagonal = 1 / (1 + np.exp(-np.linspace(_logit(low), _logit(high), 50)))
    axes.plot(
        diagonal,
        diagonal,
        color="0.6",
        linestyle=":",
        label="perfect calibration",
    )
    for index, (row, found) in enumerate(zip(chosen, points)):
        _draw_reliability(axes, row, found, _BRIDGE_COLORS[index % 8])
    calibrated = {row["reliability"].get("calibrated") for row in chosen}
    title = {
        frozenset([True]): "temperature-scaled test predictions",
        frozenset([False]): "uncalibrated test predictions",
    }.get(frozenset(calibrated), "test predictions")
    axes.set_title(title, fontsize="medium")
    _logit_axis(axes)
    axes.set_xlim(low / 1.05, 1 - (1 - high) / 1.5)
    bottom = min(min(y.min() for _, y, _ in points), low)
    # A little beyond the data, so that markers are not cut in half.
    axes.set_ylim(max(0.0, np.floor(bottom * 10) / 10) - 0.02, 1.02)
    axes.set_xlabel("confidence (mean top-class probability in bin)")
    axes.set_ylabel("accuracy in bin")
    axes.grid(alpha=0.3)
    _legend(
        figure,
        [axes],
        own_figure=ax is None,
        columns=1,
        title="marker area: share of test inputs",
    )
    return _finish(figure, path)


def pareto(trials, front=None, path=None, ax=None):
    """FLOPs against validation KL of a bridge search, with its front.

    Completed trials are dots; failed or rejected trials that have FLOPs
    are red crosses (at the top edge when they have no KL: typically
    rejected for going over the FLOPs budget); the Pareto front is a
    black step line with the front trials' ids.

    Args:
        trials: dicts with keys ``"flops"`` (relative to one backbone),
            ``"val_kl"``, ``"status"`` (``"COMPLETED"`` or other) and
            ``"trial_id"``.
        front: the front's trials; default
            `keras_bridge.metrics.pareto_front` of ``trials``.
        path: where to save the figure as a PNG; default not saved.
        ax: a `matplotlib.axes.Axes` to draw into; default a new figure.

    Returns:
        The `matplotlib.figure.Figure`.

    Example:

    >>> def trial(trial_id, flops, val_kl, status="COMPLETED"):
    ...     return {"trial_id": trial_id, "flops": flops, "val_kl": val_kl,
    ...             "status": status}
    >>> trials = [trial("0", 0.1, 0.3), trial("1", 0.2, 0.35),
    ...           trial("2", 0.3, 0.1), trial("3", 0.5, None, "FAILED")]
    >>> figure = pareto(trials)
    >>> front_line = figure.axes[0].get_lines()[0]
    >>> front_line.get_xdata().tolist(), front_line.get_ydata().tolist()
    ([0.1, 0.3], [0.3, 0.1])
    """
    # Validates `trials` before matplotlib is needed.
    computed = pareto_front(trials)
    front = computed if front is None else _checked_front(front)
    figure, (axes,) = _panels(ax, 1, (5.0, 4.0))
    done = [t for t in trials if _on_axes(t) and t["status"] == "COMPLETED"]
    axes.scatter(
        [t["flops"] for t in done],
        [t["val_kl"] for t in done],
        color="tab:blue",
        alpha=0.6,
        edgecolors="none",
        label="completed trial",
    )
    axes.step(
        [t["flops"] for t in front],
        [t["val_kl"] for t in front],
        where="post",
        color="black",
        marker="o",
        markersize=4,
        label="Pareto front",
    )
    for trial in front:
        axes.annotate(
            str(trial.get("trial_id", "")),
            (trial["flops"], trial["val_kl"]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize="x-small",
        )
    # Last: it may fix the y-range to make room along the top.
    _draw_failed(axes, [t for t in trials if t["status"] != "COMPLETED"])
    axes.set_xlabel("FLOPs (relative to one backbone)")
    axes.set_ylabel("validation KL to the teacher")
    axes.grid(alpha=0.3)
    _legend(figure, [axes], own_figure=ax is None, columns=2)
    return _finish(figure, path)


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "keras-bridge draws figures with matplotlib, which is not "
            "installed: `pip install matplotlib` (or "
            "`pip install keras-bridge[plots]`)."
        ) from error
    return Figure


def _panels(ax, count: int, figsize):
    """A figure and ``count`` axes side by side: new ones, or ``ax``."""
    if ax is None:
        # Constrained layout keeps labels and the legend inside the PNG.
        figure = _figure_class()(figsize=figsize, layout="constrained")
        return figure, list(figure.subplots(1, count, squeeze=False)[0])
    many = isinstance(ax, (list, tuple, np.ndarray))
    panels = list(np.ravel(ax)) if many else [ax]
    if len(panels) != count:
        raise ValueError(
            f"`ax` must be {count} matplotlib Axes, one per panel; "
            f"received {len(panels)}."
        )
    figure = panels[0].figure
    # Inside a subfigure, the figure that can be saved is the root one.
    return getattr(figure, "figure", None) or figure, panels


def _finish(figure, path):
    if path is not None:
        path = os.fspath(path)
        # Written beside the target, then renamed: never half a PNG.
        with atomic_write(path, overwrite=True, suffix=".png") as staging:
            figure.savefig(staging, format="png", dpi=DPI, bbox_inches="tight")
    return figure


def _legend(
    figure, panels, own_figure: bool, columns: int = 3, title=None
) -> None:
    """One legend for all panels: below them in a figure of our own, so
    that it hides no data, else in the caller's last axes."""
    handles, labels = panels[0].get_legend_handles_labels()
    if not own_figure:
        legend = panels[-1].legend(
            handles, labels, fontsize="small", title=title
        )
    else:
        legend = figure.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(labels), columns),
            fontsize="small",
            title=title,
            frameon=False,
        )
    if title is not None:
        legend.get_title().set_fontsize("small")


def _report_rows(report) -> list:
    rows = getattr(report, "rows", None)
    if not rows:
        raise ValueError(
            "`report` must be an EnsembleReport with rows; received "
            f"{report!r}."
        )
    return rows


def _metric(rows, metric: str) -> str:
    """``metric``, or its uncalibrated variant when no row has it (a
    report made without calibration data)."""
    if metric in METRIC_LABELS:
        if any(row.get(metric) is not None for row in rows):
            return metric
        fallback = metric[1:] if metric in ("cnll", "cece", "cbrier") else ""
        if any(row.get(fallback) is not None for row in rows):
            return fallback
    present = [
        key
        for key in METRIC_LABELS
        if any(row.get(key) is not None for row in rows)
    ]
    raise ValueError(
        f"`metrics` must name columns the report has; received {metric!r}. "
        f"Columns with values: {', '.join(present)}."
    )


def _family_of(name: str):
    """(label, group) of a row called ``name``."""
    for pattern, label, group in FAMILIES:
        match = re.fullmatch(pattern, name)
        if match:
            return label.format(**match.groupdict()), group
    return name, "other"


def _families(rows) -> dict:
    """Label -> (group, rows, line style), in the order first seen."""
    families, bridges = {}, 0
    for row in rows:
        label, group = _family_of(row["name"])
        if label not in families:
            style = _STYLES.get(group)
            if style is None:
                style = dict(
                    color=_BRIDGE_COLORS[bridges % 8],
                    marker=_BRIDGE_MARKERS[bridges % 8],
                    linestyle="-",
                )
                bridges += 1
            families[label] = (group, [], style)
        families[label][1].append(row)
    return families


def _reliability_rows(rows, names) -> list:
    if names is None:
        names = _default_reliability_names(rows)
    elif isinstance(names, str):
        names = [names]
    by_name = {row["name"]: row for row in rows}
    unknown = [name for name in names if name not in by_name]
    if unknown or not names:
        raise ValueError(
            f"`names` must name rows of the report; received {names!r}. "
            f"Rows: {', '.join(by_name)}."
        )
    chosen = [by_name[name] for name in names]
    missing = [row["name"] for row in chosen if not row.get("reliability")]
    if missing:
        # Reports from before the entry existed, or made by hand.
        raise ValueError(
            "`report` rows must have a 'reliability' entry, as "
            "`BridgeEnsemble.evaluate` makes them; received rows without "
            f"it: {', '.join(missing)}. Evaluate the ensemble again."
        )
    return chosen


def _default_reliability_names(rows) -> list:
    """DE-1 (or the first one-member row) and the largest row of the deep
    ensembles, the Type I and the Type II bridges."""
    singles = [r for r in rows if r["name"] == "DE-1"]
    singles = singles or [r for r in rows if r.get("members") == 1][:1]
    names = [r["name"] for r in singles]
    for group in ("ensemble", "type1", "shared", "type2"):
        members = [r for r in rows if _family_of(r["name"])[1] == group]
        if members:
            largest = max(
                members, key=lambda r: (r.get("members", 0), r.get("flops", 0))
            )
            if largest["name"] not in names:
                names.append(largest["name"])
    return names


#: Confidences this close to 0 or 1 are drawn at the bound: the logit
#: axis has no room for 1 itself.
_LOGIT_BOUND = 1e-6


def _logit(p):
    return np.log(p / (1 - p))


def _logit_axis(axes) -> None:
    """A logit x-axis labelled 0.5, 0.9, 0.99, ... (not 1 - 10^-2)."""
    from matplotlib import ticker

    axes.set_xscale("logit")
    axes.xaxis.set_major_formatter(
        ticker.FuncFormatter(lambda value, _: f"{value:.10g}")
    )
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def _reliability_points(row):
    """(confidence, accuracy, count) of a row's non-empty bins."""
    bins = row["reliability"]
    filled = [i for i, count in enumerate(bins["count"]) if count]
    confidence = np.array([bins["confidence"][i] for i in filled])
    confidence = np.clip(confidence, _LOGIT_BOUND, 1 - _LOGIT_BOUND)
    accuracy = np.array([bins["accuracy"][i] for i in filled])
    count = np.array([bins["count"][i] for i in filled], dtype="int64")
    return confidence, accuracy, count


def _draw_reliability(axes, row, points, color) -> None:
    confidence, accuracy, count = points
    share = count / count.sum()
    # The table's own ECE when the row has it (its bins are equal-width).
    ece = row.get("cece") if row["reliability"].get("calibrated") else None
    ece = ece if ece is not None else row.get("ece")
    if ece is None:
        ece = float(np.sum(share * np.abs(accuracy - confidence)))
    counts = f"{count.min()}" if count.min() == count.max() else (
        f"{count.min()}-{count.max()}"
    )  # fmt: skip
    axes.plot(
        confidence,
        accuracy,
        color=color,
        linewidth=1.2,
        label=f"{row['name']} (ECE {ece:.3f}; {len(count)} bins of {counts})",
    )
    # Area, not radius, proportional to the share, so that sizes compare.
    axes.scatter(
        confidence, accuracy, s=400 * share + 4, color=color, alpha=0.45
    )


def _on_axes(trial) -> bool:
    return all(
        trial.get(key) is not None and np.isfinite(trial[key])
        for key in ("flops", "val_kl")
    )


def _draw_failed(axes, failed) -> None:
    placed = [t for t in failed if _on_axes(t)]
    if placed:
        axes.scatter(
            [t["flops"] for t in placed],
            [t["val_kl"] for t in placed],
            color="tab:red",
            marker="x",
            label="failed or rejected",
        )
    # Without a KL a trial has only its cost: shown in a strip along the
    # top edge, kept clear of the data.
    unplaced = [
        t for t in failed if t.get("flops") is not None and not _on_axes(t)
    ]
    if unplaced:
        low, high = axes.get_ylim()
        axes.set_ylim(low, high + 0.12 * (high - low))
        # A line, not a scatter: matplotlib autoscales a line's x in a
        # blended transform, so the crosses are always in view.
        axes.plot(
            [t["flops"] for t in unplaced],
            [0.96] * len(unplaced),
            transform=axes.get_xaxis_transform(),
            color="tab:red",
            marker="x",
            linestyle="none",
            alpha=0.6,
            label="failed or rejected, no KL (top strip)",
        )


def _checked_front(front) -> list:
    front = list(front)
    if not all(isinstance(t, dict) and _on_axes(t) for t in front):
        raise ValueError(
            "`front` must be trial dicts with finite 'flops' and "
            f"'val_kl'; received {front!r}."
        )
    return sorted(front, key=lambda t: (t["flops"], t["val_kl"]))
