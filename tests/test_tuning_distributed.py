"""KerasTuner's distributed search behind `tune_bridge`: a chief and two
workers, separate processes on 127.0.0.1, through the KERASTUNER_*
environment variables. `keras-bridge tune` with a chief and two workers:
`test_cli.py` (its end-to-end test)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from keras_bridge import tuning

#: Trials of the search: more than workers, so that trials queue.
TRIALS = 3

PROCESS = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import keras
    import keras_bridge as kb

    ensemble, directory, log = sys.argv[1:4]


    class Log(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            with open(log, "a") as handle:
                handle.write(os.environ["KERASTUNER_TUNER_ID"] + "\\n")


    ens = kb.BridgeEnsemble.load(ensemble)
    data = kb.data.load_digits()
    result = ens.tune_bridge(
        data.train.take(2), data.validation.take(2), tuner="random",
        max_trials=int(sys.argv[4]), epochs=1, directory=directory,
        callbacks=[Log()], verbose=0,
    )
    print(json.dumps(None if result is None else {
        "trials": [t["status"] for t in result.trials],
        "installed": result.installed,
        "members": ens.member_names(),
    }))
    """
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.large
def test_a_chief_and_two_workers_search_and_the_chief_installs_the_best(
    tiny_ensemble_file, tmp_path
):
    script, log = tmp_path / "tune.py", tmp_path / "trials.log"
    script.write_text(PROCESS)
    port = str(_free_port())
    processes = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = {
            **os.environ,
            "KERASTUNER_ORACLE_IP": "127.0.0.1",
            "KERASTUNER_ORACLE_PORT": port,
            "KERASTUNER_TUNER_ID": tuner_id,
        }
        processes[tuner_id] = subprocess.Popen(
            [sys.executable, str(script), str(tiny_ensemble_file),
             str(tmp_path / "search"), str(log), str(TRIALS)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
    outputs = {}
    try:
        for tuner_id, process in processes.items():
            out, err = process.communicate(timeout=400)
            assert process.returncode == 0, err[-3000:]
            outputs[tuner_id] = json.loads(out.strip().splitlines()[-1])
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    chief = outputs["chief"]
    assert chief["trials"] == ["COMPLETED"] * TRIALS
    assert chief["installed"]
    assert chief["members"] == ["mode_0", "mode_1", "type1_0-1_r0.5"]
    # The workers trained every trial, and returned nothing.
    trained = log.read_text().split()
    assert len(trained) == TRIALS and set(trained) <= {"tuner0", "tuner1"}
    assert outputs["tuner0"] is None and outputs["tuner1"] is None


def test_a_partial_distributed_setting_is_refused(monkeypatch):
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "chief")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_IP"):
        tuning.distributed_role()
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    assert tuning.distributed_role() == "chief"
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    assert tuning.distributed_role() == "worker"


def test_a_distributed_search_needs_a_shared_directory(
    tiny_ensemble, digits, monkeypatch
):
    for name, value in (
        ("KERASTUNER_ORACLE_IP", "127.0.0.1"),
        ("KERASTUNER_ORACLE_PORT", "1"),
        ("KERASTUNER_TUNER_ID", "tuner0"),
    ):
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="needs `directory`"):
        tiny_ensemble.tune_bridge(
            digits.train.take(1), digits.validation.take(1), verbose=0
        )
