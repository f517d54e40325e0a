"""What a user reads: the report's tables and ``report.md``; built from
hand-made rows, no training."""

import json
import types

from keras_bridge import evaluation, pipeline
from keras_bridge.report import EnsembleReport


def _rows():
    """Three modes (mode 1 is the anchor), DE-1..DE-3 and two bridges
    rows: one worse than DE-1 and one better than DE-3."""

    def row(name, members, flops, accuracy, cnll):
        return {
            "name": name,
            "members": members,
            "flops": flops,
            "accuracy": accuracy,
            "nll": cnll + 0.05,
            "cnll": cnll,
        }

    rows = [
        row("mode 0", 1, 1.0, 0.91, 0.34),
        row("mode 1", 1, 1.0, 0.92, 0.33),
        row("mode 2", 1, 1.0, 0.87, 0.38),
        row("DE-1", 1, 1.0, 0.90, 0.35),
        row("DE-2", 2, 2.0, 0.92, 0.30),
        row("DE-3", 3, 3.0, 0.93, 0.28),
        row("Single + 1 Type I", 2, 1.1, 0.85, 0.40),
        row("Single + 2 Type I", 3, 1.2, 0.95, 0.25),
    ]
    evaluation._add_dee(rows)
    return rows


def _cell(table_line: str, column: int) -> str:
    return [c.strip() for c in table_line.strip("|").split("|")][column]


def test_dee_outside_the_measured_ensembles_prints_as_a_bound():
    report = EnsembleReport(_rows(), bridges=[])
    lines = report.to_markdown().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    by_name = {_cell(line, 0): line for line in lines[2:]}
    for column in ("DEE acc", "DEE cNLL"):
        index = header.index(column)
        assert _cell(by_name["Single + 1 Type I"], index) == "< 1"
        assert _cell(by_name["Single + 2 Type I"], index) == ">= 3"
        assert _cell(by_name["DE-2"], index) == "2.00"
        assert _cell(by_name["DE-3"], index) == "3.00"
    text = str(report)
    worse = next(x for x in text.splitlines() if "Single + 1" in x)
    better = next(x for x in text.splitlines() if "Single + 2" in x)
    assert "< 1" in worse and ">= 3" in better and "0.00" not in worse
    # report.json keeps the numbers.
    saved = json.loads(json.dumps(report.to_dict()))["rows"]
    row = next(r for r in saved if r["name"] == "Single + 2 Type I")
    assert row["dee_accuracy"] == 3.0 and row["dee_cnll"] == 3.0
    row = next(r for r in saved if r["name"] == "Single + 1 Type I")
    assert 0.0 <= row["dee_accuracy"] < 1.0


def test_report_md_has_a_heading_a_legend_and_names_the_single_mode(
    tmp_path,
):
    report = EnsembleReport(_rows(), bridges=[])
    ens = types.SimpleNamespace(
        anchor=1,
        evaluate=lambda data, calibration_data: report,
        select_members=lambda data: ["mode 1", "mode 0"],
    )
    data = types.SimpleNamespace(test="test", validation="validation")
    pipeline.evaluate(ens, data, str(tmp_path), plots=False, verbose=0)
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# ")
    assert "test split" in text and "validation split" in text
    legend = text[text.index("## Legend") :]
    for column in ("acc", "NLL", "cNLL", "FLOPs", "DEE acc", "DEE cNLL"):
        assert f"**{column}**" in legend
    # Single is the anchor, mode 1; DE-1 is the mean of all three modes.
    assert "Single" in legend and "mode 1" in legend
    assert "DE-1" in legend and "mean" in legend
    assert "< 1" in text and ">= 3" in text
    assert "Members selected on validation data" in text
