"""keras-bridge: cheap deep ensembles through mode-connecting bridges."""

import importlib as _importlib
import os as _os
import sys as _sys
import typing as _typing

from keras_bridge.version import __version__ as __version__  # public

#: The public submodules.
_MODULES = (
    "bridges",
    "config",
    "curves",
    "data",
    "evaluation",
    "export",
    "files",
    "graph",
    "inputs",
    "layers",
    "members",
    "metrics",
    "models",
    "plots",
    "saving",
    "splitting",
    "tuning",
)

#: The public names defined in submodules, and their module.
_NAMES = {
    "point_model": "curve_model",
    "recalibrate_batchnorm": "curve_model",
    "to_curve_model": "curve_model",
    "BridgeEnsemble": "ensemble",
    "flops": "flops",
    "CurveProfile": "profile",
}

__all__ = sorted(["__version__", *_MODULES, *_NAMES])

if _typing.TYPE_CHECKING:  # what `__getattr__` gives, for static tools
    from keras_bridge.curve_model import (
        point_model as point_model,
    )
    from keras_bridge.curve_model import (
        recalibrate_batchnorm as recalibrate_batchnorm,
    )
    from keras_bridge.curve_model import (
        to_curve_model as to_curve_model,
    )
    from keras_bridge.ensemble import BridgeEnsemble as BridgeEnsemble
    from keras_bridge.flops import flops as flops
    from keras_bridge.profile import CurveProfile as CurveProfile


def __getattr__(name: str):
    if name in _MODULES:
        return _importlib.import_module(f"keras_bridge.{name}")
    if name in _NAMES:
        module = _importlib.import_module(f"keras_bridge.{_NAMES[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_bridge' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


if _os.path.basename(_sys.argv[0]) == "keras-bridge":
    # The command loads TensorFlow only in the subcommands that need it,
    # so that `--help` and `--version` answer at once; its own lines
    # should not drown in TensorFlow's C++ logs, which this must silence
    # before TensorFlow loads. A user's setting wins.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
else:
    # `import keras_bridge` registers the package's layers with Keras, so
    # that `keras.saving.load_model` reads files that hold them.
    for _name in (*_MODULES, *_NAMES):
        __getattr__(_name)
    del _name
