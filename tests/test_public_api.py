"""The package's public API: small, explicit, and cheap to import."""

import subprocess
import sys

import pytest

import keras_bridge as kb


def test_every_public_name_resolves_and_nothing_else_is_listed():
    assert kb.__all__ == sorted(kb.__all__)
    for name in kb.__all__:
        assert getattr(kb, name) is not None, name
    internal = {"graph", "training", "files", "inputs", "splitting", "saving"}
    assert not internal & set(kb.__all__)


def test_the_flops_function_is_not_hidden_by_a_module():
    import keras_bridge.bridges  # noqa: F401 (imports the counting module)
    import keras_bridge.ensemble  # noqa: F401

    assert callable(kb.flops)
    assert kb.flops.__module__ == "keras_bridge.flop_count"


@pytest.mark.large
def test_import_loads_no_tuner_config_or_export_libraries():
    code = (
        "import sys, keras_bridge, keras\n"
        "heavy = ['keras_tuner', 'pydantic', 'yaml', 'tf2onnx', 'ray', "
        "'keras_bridge.ensemble', 'keras_bridge.tuning']\n"
        "print([m for m in heavy if m in sys.modules])\n"
        # The layers are registered, so Keras can read files holding them,
        # and the lazy names are listed (listing them imports nothing).
        "print(keras.saving.get_registered_object("
        "'keras_bridge>CurveLayer') is not None)\n"
        "print('BridgeEnsemble' in dir(keras_bridge))\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert result.stdout.split("\n")[:4] == ["[]", "True", "True", "[]"]
