import json
import os

import pytest

from keras_bridge import cli


@pytest.mark.large
def test_run_goes_end_to_end_on_the_bundled_data(tmp_path, capsys):
    argv = [
        "run",
        "--num-modes=2",
        "--width=0.25",
        "--epochs=1",
        "--bridge-epochs=1",
        f"--output={tmp_path}",
    ]
    assert cli.main(argv) == 0
    with open(tmp_path / "report.json") as handle:
        report = json.load(handle)
    names = [row["name"] for row in report["evaluation"]["rows"]]
    assert "Single + 1 Type I" in names and "DE-2 + 1 Type II" in names
    assert report["line"]["kind"] == "line"
    assert (tmp_path / "report.md").read_text().startswith("| configuration")
    assert (tmp_path / "ensemble.keras").is_file()
    assert (tmp_path / "model.onnx").is_file()
    serving = tmp_path / "serving" / "digits"
    assert (serving / "1" / "saved_model.pb").is_file()
    assert "NLL barrier" in capsys.readouterr().out


def test_exports_go_to_a_new_version_folder(tmp_path):
    assert cli._next_version(str(tmp_path / "missing")) == 1
    for name in ("1", "3", ".3.tmp", "notes"):
        os.makedirs(tmp_path / name)
    assert cli._next_version(str(tmp_path)) == 4


def test_a_rerun_gets_a_new_run_folder(tmp_path):
    output = str(tmp_path / "runs" / "digits")
    assert cli.run_folder(output) == output  # created, empty: used
    (tmp_path / "runs" / "digits" / "report.md").write_text("run 1")
    assert cli.run_folder(output) == output + "-2"
    (tmp_path / "runs" / "digits-2" / "report.md").write_text("run 2")
    assert cli.run_folder(output) == output + "-3"
    assert (tmp_path / "runs" / "digits" / "report.md").read_text() == "run 1"
