import json
import os
import re
import socket
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf
import yaml

import keras_bridge as kb
from keras_bridge import cli
from keras_bridge import config as config_lib

TINY = {
    "modes": {"num_modes": 2, "epochs": 1},
    "curves": {"epochs": 1, "num_points": 2},  # the fewest allowed
    "bridges": {"epochs": 1, "patience": None},
    "backbone": {"family": "plain_cnn", "width": 0.25},
    "tuning": {"tuner": "random", "max_trials": 1, "epochs": 1},
    "export": {"onnx": False},  # ONNX: see test_export and `export` below
}


def _assert_is_a_figure(path):
    """``path`` is a PNG image of a drawn figure, not an empty canvas."""
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and min(image.shape[:2]) >= 200, image.shape
    colours = np.unique(image.reshape(-1, image.shape[-1]), axis=0)
    assert len(colours) > 10, path  # axes, lines and text, not one colour


#: Trials of the distributed search: more than workers, so trials queue.
TRIALS = 3


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tune_with_a_chief_and_two_workers(config, run, logs):
    """``keras-bridge tune CONFIG --output RUN`` as KerasTuner's chief,
    and two workers that join with ``--resume RUN``: three processes on
    127.0.0.1, their output written to files in ``logs`` (a pipe nobody
    reads could fill and stall a process). Returns each process's
    standard output, by tuner id."""
    port = str(_free_port())
    command = [sys.executable, "-m", "keras_bridge.cli", "tune"]
    processes = {}

    def start(tuner_id, arguments):
        env = {
            **os.environ,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": port,
            "KERASTUNER_TUNER_ID": tuner_id,
        }
        with (
            open(logs / f"{tuner_id}.out", "w") as out,
            open(logs / f"{tuner_id}.err", "w") as err,
        ):
            processes[tuner_id] = subprocess.Popen(
                command + arguments, env=env, stdout=out, stderr=err,
                text=True,
            )  # fmt: skip

    def errors(tuner_id):
        return (logs / f"{tuner_id}.err").read_text()[-3000:]

    try:
        start("chief", [str(config), "--output", str(run)])
        deadline = time.monotonic() + 300
        while not (run / "config.yaml").exists():
            assert time.monotonic() < deadline
            assert processes["chief"].poll() is None, errors("chief")
            time.sleep(1)
        for tuner_id in ("tuner0", "tuner1"):
            start(tuner_id, ["--resume", str(run)])
        for tuner_id, process in processes.items():
            process.wait(timeout=900)
            assert process.returncode == 0, (tuner_id, errors(tuner_id))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return {
        tuner_id: (logs / f"{tuner_id}.out").read_text()
        for tuner_id in processes
    }


@pytest.mark.large
def test_tune_on_a_chief_and_two_workers_then_evaluate_and_export(tmp_path):
    """The whole command line: ``keras-bridge tune`` with KerasTuner's
    distributed search (a chief and two workers), then ``evaluate`` and
    ``export`` of the run's saved ensemble."""
    config, run = tmp_path / "tiny.yaml", tmp_path / "r"
    tiny = {**TINY, "tuning": {**TINY["tuning"], "max_trials": TRIALS}}
    config.write_text(yaml.safe_dump(tiny))
    outputs = _tune_with_a_chief_and_two_workers(config, run, tmp_path)
    out = outputs["chief"]
    used = config_lib.load(str(run / "config.yaml"))
    assert used.tuning.enabled and used.modes.num_modes == 2
    report = json.loads((run / "report.json").read_text())
    names = [row["name"] for row in report["evaluation"]["rows"]]
    assert "Single + 1 Type I" in names and "DE-2 + 1 Type II" in names
    assert report["line"]["kind"] == "line"
    # Every trial completed (KerasTuner's chief hands trials out and
    # trains none: the workers trained them).
    statuses = [trial["status"] for trial in report["tuning"]["trials"]]
    assert statuses == ["COMPLETED"] * TRIALS

    # The workers trained every trial (one Keras progress line, at the
    # end of its one epoch, per trial) and the chief none; `tune_bridge`
    # returned nothing in the workers, which left the rest to the chief.
    def epochs(text):
        return re.findall(r"(?m)^\d+/\d+ - .* - val_kl: ", text)

    tuning = out.split("== Tuning")[1].split("\n== ")[0]  # the chief's
    assert epochs(tuning) == []
    trained = epochs(outputs["tuner0"]) + epochs(outputs["tuner1"])
    assert len(trained) == TRIALS
    for tuner_id in ("tuner0", "tuner1"):
        text = outputs[tuner_id]
        over = "The search is over: the chief finishes the run."
        assert over in text and "== Report" not in text, text[-2000:]
    assert set(report["seconds"]) >= {"modes", "curves", "tuning", "type1"}
    text = (run / "report.md").read_text()
    assert text.startswith("# keras-bridge report") and "## Legend" in text
    for name in ("flops", "reliability", "curves", "pareto"):
        _assert_is_a_figure(run / f"{name}.png")
    assert (run / "ensemble.keras").is_file()
    assert not (run / "model.onnx").exists()
    assert (run / "serving" / "digits" / "1" / "saved_model.pb").is_file()
    assert "NLL barrier" in out and "== Tuning" in out
    assert "\x1b" not in out  # not a terminal: plain lines, no escapes

    # The saved ensemble evaluates and exports from the command line.
    evaluation = tmp_path / "eval"
    argv = ["evaluate", str(run / "ensemble.keras"), f"--output={evaluation}"]
    assert cli.main([*argv, "--quiet"]) == 0
    again = json.loads((evaluation / "report.json").read_text())
    # The saved ensemble scores as the run reported it.
    rows = report["evaluation"]["rows"]
    assert [row["name"] for row in again["evaluation"]["rows"]] == names
    assert names[0] == "mode 0"
    for row, before in zip(again["evaluation"]["rows"], rows):
        for key in ("accuracy", "nll", "cnll", "flops"):
            assert row[key] == pytest.approx(before[key], rel=1e-4), row
    _assert_is_a_figure(evaluation / "flops.png")
    onnx = tmp_path / "m.onnx"
    export = ["export", str(run / "ensemble.keras"), str(onnx)]
    assert cli.main([*export, "--format=onnx", "--quiet"]) == 0
    # The ONNX file computes what the run's SavedModel serves (which is
    # what the ensemble predicts: test_export).
    x, _ = kb.data.to_numpy(kb.data.load_digits().test)
    served = tf.saved_model.load(str(run / "serving" / "digits" / "1"))
    expected = served.signatures["serving_default"](inputs=tf.constant(x[:16]))
    session = ort.InferenceSession(
        str(onnx), providers=["CPUExecutionProvider"]
    )
    outputs = [o.name for o in session.get_outputs()]
    assert set(outputs) == set(expected)
    for name, value in zip(outputs, session.run(None, {"inputs": x[:16]})):
        np.testing.assert_allclose(value, expected[name], atol=1e-5)


def test_print_config_is_the_default_and_parses_back(capsys):
    assert cli.main(["run", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert config_lib.parse(printed) == config_lib.parse({})
    assert cli.main(["tune", "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["tuning"]["enabled"]


def test_a_config_file_overrides_the_defaults(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("modes:\n  num_modes: 4\nbridges:\n  type2: false\n")
    assert cli.main(["run", str(path), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["modes"]["num_modes"] == 4
    assert printed["bridges"]["type2"] is False
    assert printed["modes"]["epochs"] == 20  # untouched keys: defaults


@pytest.mark.parametrize(
    "text, key",
    [
        ("modes:\n  epochz: 3\n", "modes.epochz"),
        ("modes:\n  epochs: three\n", "modes.epochs"),
        ("modes:\n  num_modes: 1\n", "modes.num_modes"),
        ("backbone:\n  depth: 9\n", "backbone.depth"),
        ("backbone:\n  family: vgg\n", "backbone.family"),
        ("tuning:\n  tuner: grid\n", "tuning.tuner"),
        ("bridges:\n  max_flops: -0.1\n", "bridges.max_flops"),
        ("bridges:\n  type2: maybe\n", "bridges.type2"),
        ("colour: red\n", "colour"),
        ("data: digits\n", "data"),
    ],
)
def test_a_bad_config_gives_one_line_naming_the_key(
    tmp_path, capsys, text, key
):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"`{key}`" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "text, words",
    [
        ("- a\n- b\n", "mapping"),
        ("modes: [1\n", "not valid YAML"),
    ],
)
def test_a_config_that_is_not_a_mapping_is_refused(
    tmp_path, capsys, text, words
):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, words",
    [
        (["run", "missing.yaml"], "missing.yaml"),
        (["export", "missing.keras", "out"], "ENSEMBLE"),
        (["evaluate", "missing.keras"], "ENSEMBLE"),
        (["export", "a.keras", "out", "--format=zip"], "--format"),
        (["evaluate", "a.keras", "--batch-size=0"], "--batch-size"),
        (["fly"], "invalid choice"),
    ],
)
def test_bad_arguments_give_one_line_and_status_2(capsys, argv, words):
    try:
        status = cli.main(argv)
    except SystemExit as exit_info:  # argparse's own refusals
        status = exit_info.code
    assert status == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert err.strip().count("\n") <= 1  # usage line at most, then error


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("keras-bridge 0.")


def test_a_rerun_gets_a_new_run_folder(tmp_path):
    output = str(tmp_path / "runs" / "digits")
    assert cli.run_folder(output) == output  # created, empty: used
    (tmp_path / "runs" / "digits" / "report.md").write_text("run 1")
    assert cli.run_folder(output) == output + "-2"
    (tmp_path / "runs" / "digits-2" / "report.md").write_text("run 2")
    assert cli.run_folder(output) == output + "-3"
    assert (tmp_path / "runs" / "digits" / "report.md").read_text() == "run 1"


def test_quiet_silences_tensorflow_notices(
    tmp_path, caplog, capsys, monkeypatch
):
    import logging

    import tensorflow as tf

    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.WARNING)
    export = cli.COMMANDS["export"]

    def noisy_export(args):
        # TensorFlow's deprecation notices (e.g. while FLOPs are counted)
        # go through this logger: with --quiet they are dropped.
        tf.get_logger().warning("a notice during")
        export(args)

    monkeypatch.setitem(cli.COMMANDS, "export", noisy_export)
    try:
        tf.get_logger().warning("a notice before")
        missing = str(tmp_path / "missing.keras")
        assert cli.main(["export", missing, "out", "--quiet"]) == 2
        assert "a notice before" in caplog.text
        assert "a notice during" not in caplog.text
        assert "missing.keras" in capsys.readouterr().err
        # The caller's process is left as it was.
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(level)


@pytest.fixture(scope="session")
def modes_only_file(tmp_path_factory):
    """A saved ensemble of two untrained small modes, no curve: what the
    `export` command's refusals need (they write nothing to the file)."""
    import keras

    backbone = kb.models.resnet((8, 8, 1), 10, depth=8, width=0.25)
    ens = kb.BridgeEnsemble(backbone, seed=0)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    return ens.save(tmp_path_factory.mktemp("modes-only") / "ensemble.keras")


def test_export_overwrite_keeps_a_users_folder(
    modes_only_file, tmp_path, capsys
):
    userdir = tmp_path / "userdir"
    os.makedirs(userdir / "keep")
    (userdir / "keep" / "file.txt").write_text("mine")
    argv = ["export", modes_only_file, str(userdir), "--overwrite", "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "userdir" in err and "not a SavedModel" in err
    assert (userdir / "keep" / "file.txt").read_text() == "mine"


def test_resume_of_a_finished_run_leaves_it_as_it_is(
    tmp_path, capsys, monkeypatch
):
    from keras_bridge import pipeline

    def train(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(pipeline, "train", train)
    run = tmp_path / "run"
    os.makedirs(run)
    (run / "config.yaml").write_text(yaml.safe_dump(TINY))
    files = {
        "report.json": json.dumps({"seconds": {"modes": 12.5}}),
        "ensemble.keras": "the ensemble",
        "model.onnx": "the export",
    }
    for name, text in files.items():
        (run / name).write_text(text)
    assert cli.main(["run", "--resume", str(run)]) == 0
    assert "finished run" in capsys.readouterr().out
    for name, text in files.items():
        assert (run / name).read_text() == text
    assert sorted(os.listdir(run)) == sorted([*files, "config.yaml"])


#: Runs the command as the installed `keras-bridge` script does, then
#: prints the heavy modules it imported.
_AS_INSTALLED = """
import sys
sys.argv[0] = "keras-bridge"
from keras_bridge.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = {m.split(".")[0] for m in sys.modules} & {"tensorflow", "keras"}
print("heavy:", sorted(heavy))
"""


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "-h"]])
def test_help_and_version_do_not_load_tensorflow(argv):
    import subprocess
    import sys

    found = subprocess.run(
        [sys.executable, "-c", _AS_INSTALLED, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"},
    )
    assert found.stdout.rstrip().endswith("heavy: []")
    assert found.stdout.startswith(("keras-bridge 0.", "usage: keras-bridge"))
    assert found.stderr == ""  # no TensorFlow log lines


def test_python_m_keras_bridge_cli_help_does_not_load_tensorflow():
    import subprocess
    import sys

    # `-X importtime` lists on stderr every module the process imports.
    found = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_bridge.cli", "-h"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert found.returncode == 0 and found.stdout.startswith("usage:")
    imported = {
        line.split("|")[-1].strip() for line in found.stderr.splitlines()
    }
    assert "keras_bridge" in imported  # the package; the CLI runs as __main__
    assert not {"tensorflow", "keras"} & imported


def test_the_command_offers_every_export_format():
    from keras_bridge import export

    assert cli.EXPORT_FORMATS == export.FORMATS


def test_the_export_hint_names_the_flag(modes_only_file, tmp_path, capsys):
    os.makedirs(tmp_path / "serving" / "1")
    argv = ["export", modes_only_file, str(tmp_path / "serving" / "1")]
    assert cli.main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err


@pytest.mark.parametrize(
    "text, words",
    [
        ("data:\n  name: no_such_dataset\n", "no_such_dataset"),
        ("modes:\n  learning_rate: .inf\n", "`modes.learning_rate`"),
        ("bridges:\n  mixup_alpha: .nan\n", "`bridges.mixup_alpha`"),
        ("backbone:\n  width: .inf\n", "`backbone.width`"),
        ("curves:\n  learning_rate: -.inf\n", "`curves.learning_rate`"),
    ],
)
def test_a_bad_dataset_or_number_leaves_no_run_folder(
    tmp_path, capsys, text, words
):
    path = tmp_path / "bad.yaml"
    path.write_text(text + f"output: {tmp_path / 'run'}\n")
    assert cli.main(["run", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_anchor_is_announced_once(digits, tmp_path, capsys):
    import types

    import keras

    import keras_bridge as kb
    from keras_bridge import pipeline

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    backbone = keras.Model(inputs, keras.layers.Dense(10)(x))
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    data = types.SimpleNamespace(
        train=digits.train.take(2),
        validation=digits.validation.take(1),
        test=digits.test.take(1),
    )
    config = config_lib.parse(
        {"modes": {"num_modes": 2, "epochs": 1}, "curves": {"num_points": 2}}
    )

    def fit(stage):  # the stage's call, here (no units)
        method, kwargs = pipeline.CALLS[stage](ens, config, 2, None, {})
        getattr(ens, method)(
            data.train, validation_data=data.validation, **kwargs
        )

    log = pipeline._Log(2)
    pipeline._modes(ens, data, config, log, str(tmp_path), {}, fit)
    lines = capsys.readouterr().out.splitlines()
    mode = f"mode {ens.anchor}"
    said = [x for x in lines if "anchor" in x.lower() and mode in x]
    assert len(said) == 1


def test_export_refuses_its_destination_before_loading(tmp_path, capsys):
    # Not an archive: had the ensemble been loaded first, that would be
    # the error.
    broken = tmp_path / "broken.keras"
    broken.write_text("not an archive")
    os.makedirs(tmp_path / "serving" / "1")
    argv = ["export", str(broken), str(tmp_path / "serving" / "1")]
    assert cli.main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "serving" in err and "--overwrite" in err
