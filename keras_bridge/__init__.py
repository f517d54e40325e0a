"""keras-bridge: cheap deep ensembles through mode-connecting bridges."""

import os as _os
import sys as _sys

if _os.path.basename(_sys.argv[0]) == "keras-bridge":
    # The command's own lines should not drown in TensorFlow's C++ logs;
    # this must be set before TensorFlow loads. A user's setting wins.
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_bridge import (
    bridges,
    config,
    curves,
    data,
    evaluation,
    export,
    files,
    graph,
    inputs,
    layers,
    members,
    metrics,
    models,
    plots,
    saving,
    splitting,
    tuning,
)
from keras_bridge.curve_model import (
    point_model,
    recalibrate_batchnorm,
    to_curve_model,
)
from keras_bridge.ensemble import BridgeEnsemble
from keras_bridge.flops import flops
from keras_bridge.profile import CurveProfile
from keras_bridge.version import __version__

__all__ = [
    "BridgeEnsemble",
    "CurveProfile",
    "__version__",
    "bridges",
    "config",
    "curves",
    "data",
    "evaluation",
    "export",
    "files",
    "flops",
    "graph",
    "inputs",
    "layers",
    "members",
    "metrics",
    "models",
    "plots",
    "point_model",
    "recalibrate_batchnorm",
    "saving",
    "splitting",
    "to_curve_model",
    "tuning",
]
