"""Checking the arguments users pass: counts, rates and callbacks.

Each check returns the value in the type keras-bridge uses, or raises a
`ValueError` naming the argument and what was received.

Example:

>>> positive_int(3, "epochs")
3
>>> positive_float(0, "mixup_alpha", allow_zero=True)
0.0
"""

import math
import numbers

import keras
import numpy as np


def positive_int(value, argument: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools and floats are refused."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer)
    ):
        raise ValueError(
            f"`{argument}` must be an integer >= {minimum}; received "
            f"{argument}={value!r}."
        )
    if value < minimum:
        raise ValueError(
            f"`{argument}` must be an integer >= {minimum}; received "
            f"{argument}={value!r}."
        )
    return int(value)


def positive_float(
    value, argument: str, allow_zero: bool = False, finite: bool = True
) -> float:
    """``value`` as a float > 0 (>= 0 with ``allow_zero``); bools, NaN and
    (unless ``finite=False``) infinity are refused."""
    if (
        isinstance(value, (bool, np.bool_))
        or not isinstance(value, numbers.Real)
        or math.isnan(value)
        or (finite and math.isinf(value))
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        kind = "a finite number" if finite else "a number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"`{argument}` must be {kind} {bound}; received "
            f"{argument}={value!r}."
        )
    return float(value)


def training_options(options: dict) -> None:
    """Checks the common training arguments of a stage."""
    positive_float(options.get("learning_rate"), "learning_rate")
    positive_float(options.get("mixup_alpha", 0.0), "mixup_alpha", True)
    check_callbacks(options.get("callbacks"))


def check_callbacks(callbacks) -> None:
    """Checks that ``callbacks`` is ``None`` or a list (or tuple) of
    `keras.callbacks.Callback`, as `keras.Model.fit` takes them."""
    if callbacks is not None and not (
        isinstance(callbacks, (list, tuple))
        and all(isinstance(c, keras.callbacks.Callback) for c in callbacks)
    ):
        raise ValueError(
            "`callbacks` must be a list of `keras.callbacks.Callback`; "
            f"received {callbacks!r}."
        )
