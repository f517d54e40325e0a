"""Scoring ensemble configurations: the report of `BridgeEnsemble`."""

import numpy as np

from keras_bridge import metrics as metrics_lib
from keras_bridge.distillation import teacher_fidelity
from keras_bridge.flops import flops

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
    ("agreement", "agree", "{:.4f}"),
    ("kl", "KL", "{:.4f}"),
)


class EnsembleReport:
    """Scores of ensemble configurations and of each bridge.

    Attributes:
        rows: one dict per configuration with the keys of `COLUMNS`
            (FLOPs relative to one backbone; ``c*`` columns after
            temperature scaling fitted on calibration data; DEE: the
            interpolated number of full members a deep ensemble needs for
            the same accuracy / calibrated NLL; agreement and KL: mean
            fidelity of the row's bridges to their teachers).
        bridges: one dict per bridge (and point r for conditioned ones):
            agreement, KL, the bridge's and the teacher's accuracy, and
            FLOPs relative to one backbone.
    """

    def __init__(self, rows, bridges):
        self.rows = rows
        self.bridges = bridges

    def to_dict(self) -> dict:
        return {"rows": self.rows, "bridges": self.bridges}

    def row(self, name: str) -> dict:
        """The row called ``name``, e.g. ``"DE-2"``."""
        for row in self.rows:
            if row["name"] == name:
                return row
        raise KeyError(name)

    def _cells(self, row):
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        return cells

    def to_markdown(self) -> str:
        """The report as two Markdown tables."""
        header = [title for _, title, _ in COLUMNS]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        lines += ["| " + " | ".join(self._cells(r)) + " |" for r in self.rows]
        if self.bridges:
            keys = (
                "name",
                "point",
                "agreement",
                "kl",
                "accuracy",
                "teacher_accuracy",
                "flops",
            )
            lines += [
                "",
                "| " + " | ".join(keys) + " |",
                "|" + "---|" * len(keys),
            ]
            for bridge in self.bridges:
                lines.append(
                    "| " + " | ".join(_fmt(bridge[k]) for k in keys) + " |"
                )
        return "\n".join(lines)

    def __str__(self) -> str:
        header = [title for _, title, _ in COLUMNS]
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
        return "\n".join(lines)

    __repr__ = __str__


def _fmt(value):
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _softmax(logits):
    logits = np.asarray(logits, "float64")
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _configurations(ens) -> list:
    """(name, members) of every row, members as inference member names."""
    modes = [f"mode_{i}" for i in range(len(ens.modes))]
    rows = [(f"mode {i}", [m]) for i, m in enumerate(modes)]
    rows += [(f"DE-{k}", modes[:k]) for k in range(1, len(modes) + 1)]
    fixed = [b for b in ens.bridges.values() if b.point != "any"]
    type1 = [b.name for b in fixed if b.kind == "type1" and b.pair[0] == 0]
    rows += [
        (f"Single + {k} Type I", modes[:1] + type1[:k])
        for k in range(1, len(type1) + 1)
    ]
    type2 = [b for b in fixed if b.kind == "type2"]
    for m in range(2, len(modes) + 1):
        # A row group per ensemble size that brings new Type II bridges.
        if not [b for b in type2 if max(b.pair) == m - 1]:
            continue
        inside = [b.name for b in type2 if max(b.pair) < m]
        rows += [
            (f"DE-{m} + {n} Type II", modes[:m] + inside[:n])
            for n in range(1, len(inside) + 1)
        ]
    conditioned = [
        b.name
        for b in ens.bridges.values()
        if b.point == "any" and b.kind == "type1" and b.pair[0] == 0
    ]
    rows += [
        (f"Single + {k} r-conditioned (r=0.5)", modes[:1] + conditioned[:k])
        for k in range(1, len(conditioned) + 1)
    ]
    return rows


def evaluate(ens, data, calibration_data=None) -> EnsembleReport:
    """Builds the `EnsembleReport` of ``ens`` on ``data``."""
    from keras_bridge.data import to_numpy

    x, y = to_numpy(data)
    names = ens.member_names()
    model = ens.inference_model(names, temperature=1.0)
    member_probs = model.predict(x, verbose=0)["member_probabilities"]
    index = {name: i for i, name in enumerate(names)}
    if calibration_data is not None:
        x_val, y_val = to_numpy(calibration_data)
        val_probs = model.predict(x_val, verbose=0)["member_probabilities"]
    base_flops = flops(ens.backbone)

    def score(test_p, val_p):
        row = {
            "accuracy": metrics_lib.accuracy(test_p, y),
            "nll": metrics_lib.nll(test_p, y),
            "ece": metrics_lib.ece(test_p, y),
            "brier": metrics_lib.brier(test_p, y),
        }
        if val_p is not None:
            t = metrics_lib.fit_temperature(val_p, y_val)
            scaled = metrics_lib.temperature_scale(test_p, t)
            row.update(
                temperature=t,
                cnll=metrics_lib.nll(scaled, y),
                cece=metrics_lib.ece(scaled, y),
                cbrier=metrics_lib.brier(scaled, y),
            )
        return row

    teachers, bridge_rows = _bridge_fidelity(
        ens, x, y, member_probs, index, base_flops
    )
    fidelity = {b["name"]: b for b in bridge_rows if b["default_point"]}
    rows = []
    for name, members in _configurations(ens):
        cols = [index[m] for m in members]
        test_p = member_probs[:, cols].mean(axis=1)
        val_p = (
            val_probs[:, cols].mean(axis=1)
            if calibration_data is not None
            else None
        )
        row = {"name": name, "members": len(members)}
        row["flops"] = flops(ens.inference_model(members)) / base_flops
        row.update(score(test_p, val_p))
        bridged = [fidelity[m] for m in members if m in fidelity]
        if bridged:
            row["agreement"] = float(np.mean([b["agreement"] for b in bridged]))
            row["kl"] = float(np.mean([b["kl"] for b in bridged]))
        rows.append(row)
    # Reference: the curve points the Type I bridges imitate, at full cost.
    type1 = [
        b
        for b in ens.bridges.values()
        if b.kind == "type1" and b.pair[0] == 0 and b.point != "any"
    ]
    # Each point's probabilities once; the rows below are running means.
    test_points = [_softmax(teachers[(b.pair, b.point)][0]) for b in type1]
    val_points = []
    if calibration_data is not None:
        val_points = [
            _softmax(ens.point_model(b.pair, b.point).predict(x_val, verbose=0))
            for b in type1
        ]
    for k in range(1, len(type1) + 1):
        test_p = np.mean(
            [member_probs[:, index["mode_0"]]] + test_points[:k], axis=0
        )
        val_p = None
        if calibration_data is not None:
            val_p = np.mean(
                [val_probs[:, index["mode_0"]]] + val_points[:k], axis=0
            )
        row = {
            "name": f"Single + {k} curve points",
            "members": k + 1,
            "flops": float(k + 1),
        }
        row.update(score(test_p, val_p))
        rows.append(row)
    _add_dee(rows)
    return EnsembleReport(rows, bridge_rows)


def _bridge_fidelity(ens, x, y, member_probs, index, base_flops):
    teachers, rows = {}, []
    for bridge in ens.bridges.values():
        points = (0.25, 0.5, 0.75) if bridge.point == "any" else (bridge.point,)
        for r in points:
            key = (bridge.pair, r)
            if key not in teachers:
                logits = ens.point_model(bridge.pair, r).predict(x, verbose=0)
                teachers[key] = (
                    logits,
                    metrics_lib.accuracy(_softmax(logits), y),
                )
            teacher_logits, teacher_acc = teachers[key]
            member = (
                bridge.name
                if bridge.point != "any"
                else (f"{bridge.name}@{r:g}")
            )
            if member in index:
                probs = member_probs[:, index[member]]
            else:
                probs = ens.predict(x, members=[member])[
                    "member_probabilities"
                ][:, 0]
            log_probs = np.log(np.clip(probs, 1e-12, 1.0))
            fidelity = teacher_fidelity(teacher_logits, log_probs)
            rows.append(
                {
                    "name": bridge.name,
                    "point": float(r),
                    "default_point": bridge.point != "any" or r == 0.5,
                    "agreement": fidelity["agreement"],
                    "kl": fidelity["kl"],
                    "accuracy": metrics_lib.accuracy(probs, y),
                    "teacher_accuracy": teacher_acc,
                    "flops": _bridge_flops(ens, bridge, base_flops),
                }
            )
    return teachers, rows


def _bridge_flops(ens, bridge, base_flops) -> float:
    """Extra FLOPs of a bridge on top of the trunks it reads."""
    sources = [f"mode_{i}" for i in bridge.sources]
    member = bridge.name if bridge.point != "any" else f"{bridge.name}@0.5"
    with_bridge = flops(ens.inference_model(sources + [member]))
    without = flops(ens.inference_model(sources))
    return (with_bridge - without) / base_flops


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
