"""keras-bridge: cheap deep ensembles through mode-connecting bridges."""

from keras_bridge import (
    bridges,
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
    saving,
    splitting,
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
    "point_model",
    "recalibrate_batchnorm",
    "saving",
    "splitting",
    "to_curve_model",
]
