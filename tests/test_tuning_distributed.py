"""KerasTuner's distributed search behind `tune_bridge`, through the
KERASTUNER_* environment variables: the settings it needs. A search with
a chief and two workers (separate processes on 127.0.0.1, each calling
`tune_bridge` through ``keras-bridge tune``; the chief installs the best
head, the workers return None) is `test_cli.py`'s end-to-end test."""

import pytest

from keras_bridge import tuning


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
