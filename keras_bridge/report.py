"""The report of an ensemble: `EnsembleReport`, its table, and the words
around its numbers (DEE cells, the legend, ``report.md``).

`keras_bridge.evaluation` computes the scores; this module holds and
explains them, so that a report read months later (or by someone who
never ran it) explains itself.
"""

import re

from keras_bridge import plots

COLUMNS = (
    ("name", "configuration", "{}"),
    ("members", "members", "{}"),
    ("flops", "FLOPs", "{:.2f}x"),
    ("accuracy", "acc", "{:.4f}"),
    ("nll", "NLL", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("brier", "Brier", "{:.4f}"),
    ("cnll", "cNLL", "{:.4f}"),
    ("cece", "cECE", "{:.4f}"),
    ("cbrier", "cBS", "{:.4f}"),
    ("dee_accuracy", "DEE acc", "{:.2f}"),
    ("dee_cnll", "DEE cNLL", "{:.2f}"),
    ("captured", "captured", "{:.0%}"),
    ("agreement", "agree", "{:.4f}"),
    ("kl", "KL", "{:.4f}"),
    ("auroc_entropy", "AUROC H", "{:.4f}"),
    ("auroc_mi", "AUROC MI", "{:.4f}"),
    ("fpr95_entropy", "FPR95 H", "{:.4f}"),
    ("fpr95_mi", "FPR95 MI", "{:.4f}"),
)


class EnsembleReport:
    """Scores of ensemble configurations and of each bridge.

    Attributes:
        rows: one dict per configuration with the keys of `COLUMNS`
            (FLOPs relative to one backbone; ``c*`` columns after
            temperature scaling fitted on calibration data; DEE: the
            interpolated number of full members a deep ensemble needs for
            the same accuracy / calibrated NLL, printed ``< 1`` below
            DE-1 and ``>= N`` beyond the largest DE-N; agreement and KL:
            mean fidelity of the row's bridges to their teachers).
        bridges: one dict per bridge (and position t for conditioned ones):
            agreement, KL, the bridge's and the teacher's accuracy, and
            FLOPs relative to one backbone; with calibration data also
            ``val_agreement``, ``val_cnll_change`` (validation cNLL of the
            modes it reads, with it minus without it), its standard error
            ``val_cnll_change_se``, ``selected`` (whether validation
            selection, `BridgeEnsemble.select_members`, picks it),
            ``note`` (low fidelity to its teacher, or None) and ``flag``
            (why it does not pay off, or None; never set for a selected
            bridge).

    With OOD data, rows also hold ``auroc_entropy``, ``auroc_mi``,
    ``fpr95_entropy`` and ``fpr95_mi``: detection of OOD inputs among test
    inputs by the predictive entropy and the mutual information of the
    configuration's (uncalibrated) mean (`keras_bridge.metrics.ood_detection`).

    Each row also keeps ``reliability``, the data of its reliability
    diagram (not a table column): `keras_bridge.metrics.reliability_bins`
    of the test predictions in equal-count bins of at least
    `keras_bridge.evaluation.MIN_PER_BIN` inputs (at most
    `keras_bridge.evaluation.RELIABILITY_BINS` bins), plus ``calibrated``: True
    when they are of the temperature-scaled mean (with calibration data),
    False when of the raw mean.

    Example:

    >>> report = EnsembleReport(
    ...     [{"name": "DE-1", "members": 1, "flops": 1.0, "accuracy": 0.9},
    ...      {"name": "DE-2", "members": 2, "flops": 2.0, "accuracy": 0.93}],
    ...     bridges=[])
    >>> report.row("DE-2")["accuracy"]
    0.93
    >>> print(report.to_markdown())
    | configuration | members | FLOPs | acc |
    |---|---|---|---|
    | DE-1 | 1 | 1.00x | 0.9000 |
    | DE-2 | 2 | 2.00x | 0.9300 |
    """

    def __init__(self, rows, bridges):
        self.rows = rows
        self.bridges = bridges

    def plot(self, path=None, kind: str = "flops", **kwargs):
        """Draws the report (needs matplotlib).

        Args:
            path: where to save the figure as a PNG; default not saved.
            kind: ``"flops"``: each metric against relative FLOPs, a line
                per family of configurations
                (`keras_bridge.plots.flops_tradeoff`); ``"reliability"``:
                the reliability diagram of chosen rows
                (`keras_bridge.plots.reliability`).
            **kwargs: passed on to the plot function (``metrics``,
                ``names``, ``ax``).

        Returns:
            The `matplotlib.figure.Figure`.

        Example:

        >>> report = EnsembleReport(
        ...     [{"name": "DE-1", "members": 1, "flops": 1.0,
        ...       "accuracy": 0.90, "nll": 0.35},
        ...      {"name": "DE-2", "members": 2, "flops": 2.0,
        ...       "accuracy": 0.93, "nll": 0.25},
        ...      {"name": "Single + 1 Type I", "members": 2, "flops": 1.1,
        ...       "accuracy": 0.91, "nll": 0.30}],
        ...     bridges=[])
        >>> figure = report.plot(kind="flops", metrics=("accuracy", "cnll"))
        >>> [axes.get_ylabel() for axes in figure.axes]
        ['accuracy', 'NLL']
        """
        kinds = {
            "flops": plots.flops_tradeoff,
            "reliability": plots.reliability,
        }
        if kind not in kinds:
            raise ValueError(
                f"`kind` must be one of {sorted(kinds)}; received "
                f"kind={kind!r}."
            )
        return kinds[kind](self, path=path, **kwargs)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "bridges": self.bridges}

    def row(self, name: str) -> dict:
        """The row called ``name``, e.g. ``"DE-2"``."""
        for row in self.rows:
            if row["name"] == name:
                return row
        raise KeyError(name)

    @property
    def flagged(self) -> list:
        """The bridges that do not pay off (see `_check_bridges`): dicts
        of ``bridges`` with a ``flag`` saying why."""
        return [b for b in self.bridges if b.get("flag")]

    def _columns(self):
        """`COLUMNS` that some row has a value for."""
        return [
            column
            for column in COLUMNS
            if any(row.get(column[0]) is not None for row in self.rows)
        ]

    def _cells(self, row):
        cells = []
        for key, _, fmt in self._columns():
            value = row.get(key)
            if key in DEE_SCORES:
                cells.append(dee_cell(key, row, self.rows))
            else:
                cells.append("-" if value is None else fmt.format(value))
        return cells

    def _bridge_keys(self) -> list:
        """The columns of the bridges table."""
        keys = [
            "name",
            "point",
            "agreement",
            "kl",
            "accuracy",
            "teacher_accuracy",
            "flops",
        ]
        return keys + [
            key
            for key in ("val_agreement", "val_cnll_change", "note", "flag")
            if any(key in bridge for bridge in self.bridges)
        ]

    def legend(self, anchor=None) -> str:
        """What the rows and columns mean, as Markdown (`report.md`'s
        legend); ``anchor``: the mode of the "Single" rows."""
        return legend(
            [title for _, title, _ in self._columns()],
            [row["name"] for row in self.rows],
            self._bridge_keys() if self.bridges else (),
            anchor,
        )

    def to_markdown(self) -> str:
        """The report as two Markdown tables."""
        header = [title for _, title, _ in self._columns()]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        if self.bridges:
            keys = self._bridge_keys()
            lines += [
                "",
                "| " + " | ".join(keys) + " |",
                "|" + "---|" * len(keys),
            ]
            for bridge in self.bridges:
                cells = [_fmt(bridge.get(k)) for k in keys]
                lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        header = [title for _, title, _ in self._columns()]
        table = [header] + [self._cells(r) for r in self.rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = [
            "  ".join(cell.rjust(w) for cell, w in zip(row, widths))
            for row in table
        ]
        for bridge in self.bridges:
            lines.append(
                f"bridge {bridge['name']} at r={bridge['point']:g}: agreement "
                f"{bridge['agreement']:.4f}, KL {bridge['kl']:.4f}, accuracy "
                f"{bridge['accuracy']:.4f} (teacher "
                f"{bridge['teacher_accuracy']:.4f}), {bridge['flops']:.3f}x "
                "FLOPs"
            )
            if bridge.get("note"):
                lines.append(f"  note: {bridge['note']}")
            if bridge.get("flag"):
                lines.append(
                    f"  WARNING: it does not pay off: {bridge['flag']}"
                )
        return "\n".join(lines)

    __repr__ = __str__


def _fmt(value):
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


#: The score behind each DEE column, and whether higher is better.
DEE_SCORES = {"dee_accuracy": ("accuracy", True), "dee_cnll": ("cnll", False)}

#: What each column of the configurations table means, by its title.
COLUMN_NOTES = {
    "members": "networks and bridge heads whose probabilities are averaged",
    "FLOPs": "inference cost, relative to one full network",
    "acc": "accuracy of the averaged prediction",
    "NLL": "negative log-likelihood of the labels (nats per input)",
    "ECE": "expected calibration error (equal-width confidence bins)",
    "Brier": "Brier score: squared distance of the probabilities to the "
    "one-hot label, summed over classes",
    "cNLL": "NLL after temperature scaling fitted on the validation split",
    "cECE": "ECE after temperature scaling",
    "cBS": "Brier score after temperature scaling",
    "DEE acc": "deep-ensemble equivalent on accuracy: how many "
    "independently trained networks (DE-k) reach this accuracy, "
    "interpolated between sizes; `< 1`: below DE-1, `>= N`: beyond "
    "DE-N, the largest ensemble measured",
    "DEE cNLL": "deep-ensemble equivalent on cNLL (as DEE acc)",
    "captured": "share of the cNLL gain of Single + k curve points over "
    "Single that the row's k bridges reach",
    "agree": "how often the row's bridges predict the class of their "
    "teacher (the curve point they imitate)",
    "KL": "KL divergence from the teachers to the row's bridges",
    "AUROC H": "OOD detection by predictive entropy: area under the ROC curve",
    "AUROC MI": "OOD detection by mutual information: area under the ROC curve",
    "FPR95 H": "OOD detection by predictive entropy: false positive rate "
    "at 95 % true positives",
    "FPR95 MI": "OOD detection by mutual information: false positive rate "
    "at 95 % true positives",
}

#: What the columns of the bridges table mean.
BRIDGE_NOTES = {
    "point": "r, the curve point the bridge imitates",
    "agreement": "share of test inputs where it predicts its teacher's class",
    "kl": "KL divergence from its teacher",
    "teacher_accuracy": "accuracy of the curve point itself",
    "flops": "its own cost, on top of the networks it reads",
    "val_agreement": "agreement on the validation split",
    "val_cnll_change": "validation cNLL of the modes it reads, with it "
    "minus without it (negative: it helps)",
    "note": "low fidelity: it agrees with its teacher on under 95 % of "
    "the validation inputs (no harm by itself)",
    "flag": "why it does not pay off, if it does not: it worsens the "
    "validation cNLL beyond noise and validation selection leaves it out",
}


def dee_cell(key: str, row: dict, rows) -> str:
    """The text of a DEE cell: ``"< 1"`` below DE-1, ``">= N"`` beyond
    the largest deep ensemble DE-N, else the number (the report's dict
    keeps the number in every case).

    Example:

    >>> rows = [{"name": "DE-1", "members": 1, "accuracy": 0.90},
    ...         {"name": "DE-2", "members": 2, "accuracy": 0.92}]
    >>> better = {"name": "Single + 2 Type I", "accuracy": 0.95,
    ...           "dee_accuracy": 2.0}
    >>> dee_cell("dee_accuracy", better, rows + [better])
    '>= 2'
    >>> dee_cell("dee_accuracy", {"accuracy": 0.8, "dee_accuracy": 0.0}, rows)
    '< 1'
    """
    value = row.get(key)
    if value is None:
        return "-"
    if value < 1:
        return "< 1"
    score, higher_is_better = DEE_SCORES[key]
    ensembles = [
        r
        for r in rows
        if re.fullmatch(r"DE-\d+", r["name"]) and r.get(score) is not None
    ]
    mine = row.get(score)
    if ensembles and mine is not None:
        sign = 1 if higher_is_better else -1
        best = max(sign * r[score] for r in ensembles)
        if sign * mine > best:
            return f">= {max(r['members'] for r in ensembles)}"
    return f"{value:.2f}"


def _row_notes(names, anchor) -> list:
    """Legend lines for the kinds of rows in ``names``."""
    num_modes = sum(bool(re.fullmatch(r"mode \d+", n)) for n in names)
    single = "the anchor" if anchor is None else f"mode {anchor}, the anchor"
    notes = [
        (r"mode \d+", "**mode i**: one trained network alone"),
        (
            r"DE-\d+",
            "**DE-k**: a deep ensemble of k modes, scored as the mean over "
            f"subsets of k of the {num_modes or 'M'} modes; **DE-1** is the "
            "mean over all single modes",
        ),
        (
            r"Single \+ .*",
            f"**Single**: {single} (best on validation data), not DE-1; "
            "the Single + k rows add k bridges (or curve points) to it",
        ),
        (
            r".* Type I",
            "**Type I**: a small head reading the anchor's features that "
            "imitates a point of a curve from the anchor",
        ),
        (
            r"Shared trunk.*",
            "**Shared trunk**: one trunk trained with every Type I head",
        ),
        (
            r".* Type II",
            "**DE-m + n Type II**: the first m modes and n bridges that "
            "imitate curve points between them",
        ),
        (
            r".* curve points",
            "**curve points**: the points the Type I bridges imitate, as "
            "full networks (the reference the bridges approach)",
        ),
        (
            r".* [rt]-conditioned.*",
            "**t-conditioned**: one head for every curve position, at t = 0.5",
        ),
    ]
    return [
        f"- {text}"
        for pattern, text in notes
        if any(re.fullmatch(pattern, name) for name in names)
    ]


def legend(titles, names, bridge_keys=(), anchor=None) -> str:
    """The Markdown legend of a report with columns ``titles``, rows
    ``names`` and bridges-table columns ``bridge_keys``."""
    lines = ["## Legend", "", "Rows:", ""]
    lines += _row_notes(names, anchor)
    lines += ["", "Columns (test split unless said):", ""]
    lines += [
        f"- **{title}**: {COLUMN_NOTES[title]}"
        for title in titles
        if title in COLUMN_NOTES
    ]
    keys = [key for key in bridge_keys if key in BRIDGE_NOTES]
    if keys:
        lines += ["", "Bridges table:", ""]
        lines += [f"- **{key}**: {BRIDGE_NOTES[key]}" for key in keys]
    return "\n".join(lines)


def markdown(report, selected, anchor=None) -> str:
    """``report.md``: a heading, the tables, the flagged bridges, the
    members kept and the legend."""
    lines = [
        "# keras-bridge report",
        "",
        "Scores on the test split; the `c*` columns are temperature-scaled "
        "on the validation split.",
        "",
        report.to_markdown(),
        "",
    ]
    if report.flagged:
        lines += ["Bridges that do not pay off:", ""]
        lines += [f"- {b['name']}: {b['flag']}" for b in report.flagged]
        lines.append("")
    lines += [f"Members selected on validation data: {selected}", ""]
    lines += [report.legend(anchor), ""]
    return "\n".join(lines)
