"""keras-bridge: cheap deep ensembles through mode-connecting bridges.

The public API is what ``__all__`` lists: `BridgeEnsemble` and the few
functions and modules a user calls directly. ``import keras_bridge``
loads only Keras and the package's Keras layers (so that
`keras.saving.load_model` reads files that hold them); everything else,
KerasTuner, pydantic and the plotting code included, loads on first use.
The other submodules (``keras_bridge.graph``, ``keras_bridge.training``,
...) can be imported, but they are the package's internals and may change
without notice.
"""

import importlib as _importlib
import os as _os
import sys as _sys
import typing as _typing

from keras_bridge.version import __version__ as __version__  # public

#: The public names, and the module that defines each.
_NAMES = {
    "BridgeEnsemble": "ensemble",
    "CurveProfile": "curve_profile",
    "EnsembleReport": "report",
    "flops": "flop_count",
    "point_model": "curve_model",
    "recalibrate_batchnorm": "curve_model",
    "set_data_checks": "data_checks",
    "to_curve_model": "curve_model",
}

#: The public submodules.
_MODULES = (
    "config",
    "curves",
    "data",
    "layers",
    "metrics",
    "models",
    "plots",
    "tuning",
)

__all__ = sorted(["__version__", *_NAMES, *_MODULES])

if _typing.TYPE_CHECKING:  # what `__getattr__` gives, for static tools
    from keras_bridge import config as config
    from keras_bridge import curves as curves
    from keras_bridge import data as data
    from keras_bridge import layers as layers
    from keras_bridge import metrics as metrics
    from keras_bridge import models as models
    from keras_bridge import plots as plots
    from keras_bridge import tuning as tuning
    from keras_bridge.curve_model import point_model as point_model
    from keras_bridge.curve_model import (
        recalibrate_batchnorm as recalibrate_batchnorm,
    )
    from keras_bridge.curve_model import to_curve_model as to_curve_model
    from keras_bridge.curve_profile import CurveProfile as CurveProfile
    from keras_bridge.data_checks import set_data_checks as set_data_checks
    from keras_bridge.ensemble import BridgeEnsemble as BridgeEnsemble
    from keras_bridge.flop_count import flops as flops
    from keras_bridge.report import EnsembleReport as EnsembleReport


def __getattr__(name: str):
    if name in _NAMES:
        module = _importlib.import_module(f"keras_bridge.{_NAMES[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        # Any submodule, public or internal, on first use, as after
        # `import keras_bridge.<name>`.
        try:
            return _importlib.import_module(f"keras_bridge.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"keras_bridge.{name}":
                raise
    raise AttributeError(f"module 'keras_bridge' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


def _running_the_command() -> bool:
    """Whether this process is the ``keras-bridge`` command, started as
    the script or as ``python -m keras_bridge.cli``."""
    if _os.path.basename(_sys.argv[0]) == "keras-bridge":
        return True
    argv = list(getattr(_sys, "orig_argv", ()))
    if "-m" not in argv:
        return False
    return argv[argv.index("-m") + 1 :][:1] == ["keras_bridge.cli"]


if _running_the_command():
    # The command loads TensorFlow only in the subcommands that need it,
    # so that `--help` and `--version` answer at once; its own lines
    # should not drown in TensorFlow's C++ logs, which this must silence
    # before TensorFlow loads. A user's setting wins.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
else:
    # The package's Keras objects (layers, curves, the archive) register
    # with Keras when their modules load, so that `keras.saving.load_model`
    # reads files that hold them.
    _importlib.import_module("keras_bridge.layers")
    _importlib.import_module("keras_bridge.archive")
