"""How keras-bridge speaks: progress lines and warnings.

Lines go where Keras' own progress messages go: to standard output, or,
after `keras.utils.disable_interactive_logging()`, to Python logging
(the ``keras_bridge`` logger, level INFO). Warnings name the line of the
user's code that led to them, however deep in keras-bridge they arose.
"""

import inspect
import logging
import os
import sys
import warnings

#: The logger of keras-bridge's lines when Keras' interactive logging is
#: off.
logger = logging.getLogger("keras_bridge")

_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def print_msg(message) -> None:
    """Writes one line as Keras writes its progress messages.

    To standard output (flushed) while Keras' interactive logging is on,
    the default; to ``logger`` at level INFO after
    `keras.utils.disable_interactive_logging()`.

    Example:

    >>> print_msg("Anchor: mode 1.")
    Anchor: mode 1.
    """
    import keras  # not at import time: `keras-bridge --help` loads no TF

    if keras.utils.is_interactive_logging_enabled():
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()
    else:
        logger.info(message)


def warn(message, category=UserWarning) -> None:
    """`warnings.warn` that points at the user's line, not into
    keras-bridge.

    Example:

    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn("the curve's midpoint is worse than its ends")
    >>> print(caught[0].message)
    the curve's midpoint is worse than its ends
    """
    frame = inspect.currentframe().f_back  # the library function that warns
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
