"""The words around the report's numbers: DEE cells, the legend, and
``report.md``.

`keras_bridge.evaluation.EnsembleReport` holds the scores; this module
says what they mean, so that a report read months later (or by someone
who never ran it) explains itself.
"""

import re

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
            r".* r-conditioned.*",
            "**r-conditioned**: one head for every curve point, at r = 0.5",
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
