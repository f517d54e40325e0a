"""Lines go through Keras' channel; warnings point at the user's line."""

import logging
import warnings

import keras

from keras_bridge import messages


def _warn_deep():
    messages.warn("deep")


def test_a_warning_names_the_users_line(monkeypatch):
    # Pretend this file is part of the package: the warning must then
    # skip it too and name the first frame outside, the test runner's.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        messages.warn("direct")  # this line is the user's
    assert caught[0].filename == __file__
    assert caught[0].lineno == _line_of('messages.warn("direct")')
    monkeypatch.setattr(messages, "_PACKAGE", __file__)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _warn_deep()
    assert caught[0].filename != __file__  # every frame here is "inside"


def _line_of(text):
    with open(__file__) as file:
        for number, line in enumerate(file, 1):
            if text in line and "_line_of" not in line:
                return number


def test_lines_follow_keras_interactive_logging(capsys, caplog):
    messages.print_msg("to stdout")
    assert capsys.readouterr().out == "to stdout\n"
    keras.utils.disable_interactive_logging()
    try:
        with caplog.at_level(logging.INFO, logger="keras_bridge"):
            messages.print_msg("to logging")
    finally:
        keras.utils.enable_interactive_logging()
    assert capsys.readouterr().out == ""
    assert [r.getMessage() for r in caplog.records] == ["to logging"]


def test_a_library_warning_names_the_line_that_called_the_library():
    import keras_bridge as kb

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(3, activation="softmax", name="logits")(x)
    backbone = keras.Model(inputs, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kb.BridgeEnsemble(backbone, feature_layer="conv")  # the user's line
    (warning,) = [w for w in caught if "softmax" in str(w.message)]
    assert warning.filename == __file__
    assert warning.lineno == _line_of("# the user's line")
