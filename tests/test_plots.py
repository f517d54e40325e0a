"""Figures: built from hand-made reports, profiles and trials; no
training."""

import doctest
import json
import sys

import numpy as np
import pytest

from keras_bridge import CurveProfile, curve_profile, evaluation, metrics, plots
from keras_bridge.report import EnsembleReport

matplotlib_image = pytest.importorskip("matplotlib.image")


def _probabilities(seed, n=300, num_classes=4, temperature=0.6):
    """Overconfident predictions: labels drawn from softmax(logits), the
    model sharpens them by ``temperature``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, num_classes)) * 2
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(num_classes, p=p) for p in true])
    sharp = np.exp(logits / temperature)
    return sharp / sharp.sum(1, keepdims=True), labels


def _row(name, members, flops, seed=0, calibrated=True):
    probabilities, labels = _probabilities(seed)
    row = {
        "name": name,
        "members": members,
        "flops": flops,
        "accuracy": 0.8 + 0.01 * members + 0.001 * seed,
        "nll": 0.6 - 0.02 * members,
        "cnll": 0.5 - 0.02 * members if calibrated else None,
    }
    row["reliability"] = {
        "calibrated": calibrated,
        **metrics.reliability_bins(probabilities, labels),
    }
    return row


ROW_SPECS = [
    ("mode 0", 1, 1.0),
    ("mode 1", 1, 1.0),
    ("DE-1", 1, 1.0),
    ("DE-2", 2, 2.0),
    ("DE-3", 3, 3.0),
    ("Single + 1 Type I", 2, 1.1),
    ("Single + 2 Type I", 3, 1.2),
    ("DE-2 + 1 Type II", 3, 2.15),
    ("DE-3 + 1 Type II", 4, 3.15),
    ("DE-3 + 2 Type II", 5, 3.3),
    ("DE-3 + 3 Type II", 6, 3.45),
    ("Single + 1 curve points", 2, 2.0),
    ("Single + 2 curve points", 3, 3.0),
]

FAMILIES = [
    "single modes",
    "DE-k",
    "Single + k Type I",
    "DE-2 + k Type II",
    "DE-3 + k Type II",
    "Single + k curve points",
]


def _report(calibrated=True):
    rows = [
        _row(name, members, flops, seed, calibrated)
        for seed, (name, members, flops) in enumerate(ROW_SPECS)
    ]
    return EnsembleReport(rows, bridges=[])


def _profiles():
    t = np.linspace(0.0, 1.0, 5)
    line = CurveProfile(
        "line", (0, 1), t, [0.9, 0.5, 0.3, 0.5, 0.9], [0.3, 1, 2, 1, 0.3]
    )
    curve = CurveProfile(
        "curve",
        (0, 1),
        t,
        [0.9, 0.88, 0.87, 0.88, 0.9],
        [0.3, 0.35, 0.4, 0.35, 0.3],
    )
    return line, curve


def _trial(trial_id, flops, val_kl, status="COMPLETED"):
    return {
        "trial_id": trial_id,
        "flops": flops,
        "val_kl": val_kl,
        "status": status,
    }


TRIALS = [
    _trial("a", 0.10, 0.40),
    _trial("b", 0.20, 0.25),
    _trial("c", 0.25, 0.30),  # dominated by b
    _trial("d", 0.30, 0.10),
    _trial("e", 0.30, 0.10),  # the same point as d: both stay
    _trial("f", 0.40, 0.10),  # as good as d, at more FLOPs
    _trial("g", 0.05, 0.01, "FAILED"),  # would dominate all: not completed
    _trial("h", 0.50, None, "INVALID"),  # rejected over budget: no KL
    _trial("i", 0.15, float("nan")),  # diverged
]


def _check_png(path, figure):
    """The PNG exists, reads back, and has the figure's size at `DPI`
    (give or take the tight bounding box's padding)."""
    image = matplotlib_image.imread(path)
    width, height = figure.get_size_inches() * plots.DPI
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert abs(image.shape[0] - height) <= 0.1 * height
    assert abs(image.shape[1] - width) <= 0.1 * width
    # Not a blank canvas: something was drawn.
    assert image[..., :3].std() > 0.05


def _labels(axes):
    return [line.get_label() for line in axes.get_lines()]


def test_flops_tradeoff_draws_a_line_per_family(tmp_path):
    report = _report()
    path = tmp_path / "flops.png"
    figure = report.plot(path, kind="flops")
    _check_png(path, figure)
    panels = figure.axes
    assert [a.get_ylabel() for a in panels] == ["accuracy", "calibrated NLL"]
    for axes in panels:
        assert "FLOPs" in axes.get_xlabel()
        assert _labels(axes) == FAMILIES
    assert len(figure.legends) == 1
    # The DE-k line runs through DE-1, DE-2, DE-3 in FLOPs order.
    de_line = panels[0].get_lines()[1]
    assert de_line.get_xdata().tolist() == [1.0, 2.0, 3.0]
    expected = [report.row(f"DE-{k}")["accuracy"] for k in (1, 2, 3)]
    assert de_line.get_ydata().tolist() == expected


def test_flops_tradeoff_falls_back_to_nll_without_calibration():
    report = _report(calibrated=False)
    figure = plots.flops_tradeoff(report, metrics=("cnll",))
    (axes,) = figure.axes
    assert axes.get_ylabel() == "NLL"
    de_line = axes.get_lines()[1]
    expected = [report.row(f"DE-{k}")["nll"] for k in (1, 2, 3)]
    assert de_line.get_ydata().tolist() == expected


def test_flops_tradeoff_draws_into_given_axes():
    from matplotlib.figure import Figure

    figure = Figure()
    panels = figure.subplots(1, 2)
    returned = plots.flops_tradeoff(_report(), ax=panels)
    assert returned is figure
    assert all(_labels(axes) == FAMILIES for axes in panels)
    with pytest.raises(ValueError, match="`ax` must be 2"):
        plots.flops_tradeoff(_report(), ax=panels[0])


def test_curve_profile_draws_line_and_curve(tmp_path):
    line, curve = _profiles()
    path = tmp_path / "profile.png"
    figure = line.plot(path=path, others=[curve])
    _check_png(path, figure)
    # Both on the first panel; the curve alone on the second.
    axes, zoomed = figure.axes
    assert _labels(zoomed) == ["curve 0 -> 1"]
    assert _labels(axes) == ["line 0 -> 1", "curve 0 -> 1"]
    drawn = axes.get_lines()
    assert [d.get_linestyle() for d in drawn] == ["--", "-"]
    np.testing.assert_array_equal(drawn[0].get_ydata(), line.nll)
    np.testing.assert_array_equal(drawn[1].get_xdata(), curve.t)
    assert axes.get_ylabel() == "NLL" and axes.get_xlabel().startswith("t")
    figure = plots.curve_profile(curve, metric="accuracy")
    np.testing.assert_array_equal(
        figure.axes[0].get_lines()[0].get_ydata(), curve.accuracy
    )
    assert figure.axes[0].get_ylabel() == "accuracy"


def test_reliability_draws_the_chosen_rows(tmp_path):
    report = _report()
    path = tmp_path / "reliability.png"
    figure = report.plot(path=path, kind="reliability")
    _check_png(path, figure)
    (axes,) = figure.axes
    # The diagonal, then the single model and the largest rows of the
    # deep ensembles, the Type I and the Type II bridges.
    names = ["DE-1", "DE-3", "Single + 2 Type I", "DE-3 + 3 Type II"]
    labels = _labels(axes)
    assert labels[0] == "perfect calibration"
    assert [label.split(" (")[0] for label in labels[1:]] == names
    # The ECE in each label is that of the predictions behind the bins.
    seed = [spec[0] for spec in ROW_SPECS].index("DE-3")
    ece = metrics.ece(*_probabilities(seed))
    assert labels[2].startswith(f"DE-3 (ECE {ece:.3f}; ")
    assert "temperature-scaled" in axes.get_title()
    assert axes.get_xlabel().startswith("confidence")
    assert axes.get_ylabel() == "accuracy in bin"
    figure = plots.reliability(_report(calibrated=False), names=["DE-2"])
    assert _labels(figure.axes[0])[1].startswith("DE-2 (ECE")
    assert figure.axes[0].get_title() == "uncalibrated test predictions"


@pytest.mark.parametrize("num_bins", [1, 10, 15])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reliability_bins_agree_with_ece(seed, num_bins):
    probabilities, labels = _probabilities(seed, n=500, num_classes=7)
    bins = metrics.reliability_bins(probabilities, labels, num_bins)
    assert len(bins["edges"]) == num_bins + 1
    assert sum(bins["count"]) == len(labels)
    gap = sum(
        count / len(labels) * abs(accuracy - confidence)
        for count, accuracy, confidence in zip(
            bins["count"], bins["accuracy"], bins["confidence"]
        )
        if count
    )
    assert gap == pytest.approx(
        metrics.ece(probabilities, labels, num_bins), abs=1e-9
    )
    assert json.loads(json.dumps(bins)) == bins


def test_reliability_bins_by_hand():
    # Confidences 0.7 (right), 0.6 (wrong), 0.4 (right); two bins.
    probabilities = [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.4, 0.35, 0.25]]
    bins = metrics.reliability_bins(probabilities, [0, 2, 0], num_bins=2)
    assert bins["edges"] == [0.0, 0.5, 1.0]
    assert bins["count"] == [1, 2]
    assert bins["accuracy"] == [1.0, 0.5]
    assert bins["confidence"] == pytest.approx([0.4, 0.65])


def test_evaluation_rows_keep_their_reliability_bins():
    val_p, val_y = _probabilities(0)
    test_p, test_y = _probabilities(1)
    row = evaluation._score(test_p, test_y, val_p, val_y)
    bins = row["reliability"]
    assert bins["calibrated"] is True
    # Equal-count bins of MIN_PER_BIN inputs: 300 inputs, 12 bins.
    assert bins["count"] == [evaluation.MIN_PER_BIN] * 12
    # Of the temperature-scaled predictions, not of the raw ones.
    scaled = metrics.temperature_scale(test_p, row["temperature"])
    assert bins == {
        "calibrated": True,
        **metrics.reliability_bins(scaled, test_y, 12, "quantile"),
    }
    row = evaluation._score(test_p, test_y, None, None)
    assert row["reliability"] == {
        "calibrated": False,
        **metrics.reliability_bins(test_p, test_y, 12, "quantile"),
    }


def test_report_stays_json_and_its_tables_unchanged():
    report = _report()
    assert json.loads(json.dumps(report.to_dict())) == report.to_dict()
    rows = [dict(row) for row in report.rows]
    for row in rows:
        del row["reliability"]
    bare = EnsembleReport(rows, bridges=[])
    assert report.to_markdown() == bare.to_markdown()
    assert str(report) == str(bare)


def test_pareto_front_by_hand():
    front = metrics.pareto_front(TRIALS)
    assert [t["trial_id"] for t in front] == ["a", "b", "d", "e"]
    assert plots.pareto_front is metrics.pareto_front
    assert metrics.pareto_front([]) == []


def test_pareto_draws_trials_and_front(tmp_path):
    path = tmp_path / "pareto.png"
    figure = plots.pareto(TRIALS, path=path)
    _check_png(path, figure)
    (axes,) = figure.axes
    front_line, rejected = axes.get_lines()
    assert front_line.get_label() == "Pareto front"
    assert front_line.get_xdata().tolist() == [0.10, 0.20, 0.30, 0.30]
    assert front_line.get_ydata().tolist() == [0.40, 0.25, 0.10, 0.10]
    assert rejected.get_xdata().tolist() == [0.5]
    # Trial h has FLOPs 0.5 and no KL: it must still be in view.
    assert axes.get_xlim()[1] > 0.5
    completed, failed = axes.collections
    assert len(completed.get_offsets()) == 6  # a-f; i has no KL
    assert failed.get_offsets().tolist() == [[0.05, 0.01]]
    assert "FLOPs" in axes.get_xlabel() and "KL" in axes.get_ylabel()
    # A front given by the caller is drawn as given, in FLOPs order.
    figure = plots.pareto(TRIALS, front=[TRIALS[5], TRIALS[0]])
    drawn = figure.axes[0].get_lines()[0]
    assert drawn.get_xdata().tolist() == [0.10, 0.40]


@pytest.mark.parametrize(
    "call, argument, accepted",
    [
        (lambda: _report().plot(kind="bar"), "`kind`", "'reliability'"),
        (lambda: _profiles()[0].plot(metric="loss"), "`metric`", "'nll'"),
        (
            lambda: plots.flops_tradeoff(_report(), metrics=("loss",)),
            "`metrics`",
            "accuracy",
        ),
        (
            lambda: plots.reliability(_report(), names=["DE-9"]),
            "`names`",
            "DE-3",
        ),
        (
            lambda: plots.reliability(
                EnsembleReport([{"name": "DE-1", "members": 1}], [])
            ),
            "`report`",
            "reliability",
        ),
        (lambda: plots.curve_profile([]), "`profiles`", "CurveProfile"),
        (lambda: plots.pareto([{"flops": 1.0}]), "`trials`", "'status'"),
        (
            lambda: plots.pareto(TRIALS, front=[_trial("x", None, 0.1)]),
            "`front`",
            "'flops'",
        ),
    ],
)
def test_bad_arguments_raise_value_error(call, argument, accepted):
    with pytest.raises(ValueError) as error:
        call()
    message = str(error.value)
    assert argument in message and "received" in message
    assert accepted in message


def test_without_matplotlib_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        _report().plot(kind="flops")
    # The front needs no matplotlib: tuning code uses it.
    assert len(metrics.pareto_front(TRIALS)) == 4


@pytest.mark.parametrize("module", [plots, evaluation, curve_profile, metrics])
def test_docstring_examples_run(module):
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0


def _confident(seed, n=300, num_classes=10):
    """A good model on a small test set: every confidence above 0.96
    (one equal-width bin of 15), 97 % right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(num_classes, size=n)
    top = 1 - 10 ** -rng.uniform(1.5, 5, size=n)
    wrong = rng.random(n) < 0.03
    predicted = np.where(wrong, (labels + 1) % num_classes, labels)
    probabilities = np.tile(((1 - top) / (num_classes - 1))[:, None], (1, 10))
    probabilities[np.arange(n), predicted] = top
    return probabilities, labels


def test_reliability_bins_adapt_to_a_confident_model(tmp_path):
    probabilities, labels = _confident(0)
    row = {"name": "DE-1", "members": 1, "flops": 1.0}
    row.update(evaluation._score(probabilities, labels, None, None))
    path = tmp_path / "reliability.png"
    figure = plots.reliability(EnsembleReport([row], []), path=path)
    axes = figure.axes[0]
    drawn = axes.get_lines()[1]
    points = np.column_stack([drawn.get_xdata(), drawn.get_ydata()])
    # Several bins, and their markers apart on the figure, not piled up
    # at (1, 1): at least half at distinct places (1 % of the axes).
    assert len(points) >= 8
    placed = axes.transAxes.inverted().transform(
        axes.transData.transform(points)
    )
    distinct = {tuple(p) for p in np.round(placed * 100)}
    assert len(distinct) >= len(points) // 2
    # The counts per bin are shown.
    counts = row["reliability"]["count"]
    assert sum(counts) == len(labels) and max(counts) - min(counts) <= 1
    assert f"bins of {min(counts)}" in drawn.get_label()


def test_curves_show_every_curve_and_the_data_scored(tmp_path):
    line, curve = _profiles()
    t = line.t
    other = CurveProfile(
        "curve", (0, 2), t, [0.9] * 5, [0.3, 0.45, 0.55, 0.42, 0.31]
    )
    path = tmp_path / "curves.png"
    figure = plots.curve_profile(
        [line, curve, other], path=path, scored_on="test set"
    )
    _check_png(path, figure)
    texts = [a.get_ylabel() + a.get_title() for a in figure.axes]
    texts.append(figure.get_suptitle())
    assert any("test set" in text for text in texts)
    # Each curve is drawn, in its own colour, on axes whose height its
    # values fill: not flattened under the straight line's barrier.
    for drawn_curve in (curve, other):
        label = f"curve {drawn_curve.pair[0]} -> {drawn_curve.pair[1]}"
        holding = [
            axes
            for axes in figure.axes
            if label in [drawn.get_label() for drawn in axes.get_lines()]
        ]
        spans = [
            np.ptp(drawn_curve.nll) / (a.get_ylim()[1] - a.get_ylim()[0])
            for a in holding
        ]
        assert max(spans) > 0.25
    colours = {
        drawn.get_color()
        for axes in figure.axes
        for drawn in axes.get_lines()
        if drawn.get_label().startswith("curve")
    }
    assert len(colours) == 2
