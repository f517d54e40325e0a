"""The README's example runs as written (one epoch per stage, 2 modes,
a plain CNN for its ResNet)."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.large
def test_the_readme_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(
        r"## In one screen\n\n```python\n(.+?)\n```", text, re.S
    )
    short = re.sub(r"epochs=\d+", "epochs=1", code)
    short = short.replace("num_modes=3", "num_modes=2")
    short = short.replace("max_trials=10", "max_trials=2")
    # 3 points per profile, not 11: each point recalibrates BatchNorm.
    short = short.replace(
        "bn_data=data.train)", "bn_data=data.train, num_points=3)"
    )
    # A plain CNN for the ResNet: the same calls in half the time. (That
    # ResNet, depth 8 at width 0.5, goes through every stage, evaluation
    # and export in the tests of `conftest.ensemble_files`.)
    resnet = (
        "kb.models.resnet(\n"
        "    data.input_shape, data.num_classes, depth=8, width=0.5\n)"
    )
    assert resnet in short
    short = short.replace(
        resnet,
        "kb.models.plain_cnn(data.input_shape, data.num_classes, width=0.25)",
    )
    assert short.count("epochs=1") == 3 and "num_modes=2" in short
    assert "max_trials=2" in short and short.count("num_points=3") == 2
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(short, "README.md", "exec"), namespace)
    outputs, ens = namespace["outputs"], namespace["ens"]
    assert outputs["member_probabilities"].shape[1] == len(ens.member_names())
    assert set(namespace["members"]) <= set(ens.member_names())
    for path in ("serving/digits/1/saved_model.pb", "digits.onnx"):
        assert (tmp_path / path).is_file()
    assert (tmp_path / "ensemble.keras").is_file()
    assert (tmp_path / "report.png").stat().st_size > 1000
    assert len(namespace["result"].trials) == 2
