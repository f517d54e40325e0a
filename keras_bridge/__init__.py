"""keras-bridge: cheap deep ensembles through mode-connecting bridges."""

from keras_bridge import (
    bridges,
    curves,
    data,
    evaluation,
    export,
    layers,
    metrics,
    models,
    saving,
    splitting,
)
from keras_bridge.conversion import (
    point_model,
    recalibrate_batchnorm,
    to_curve_model,
)
from keras_bridge.ensemble import BridgeEnsemble, CurveProfile
from keras_bridge.flops import flops

__version__ = "0.1.0"

__all__ = [
    "BridgeEnsemble",
    "CurveProfile",
    "bridges",
    "curves",
    "data",
    "evaluation",
    "export",
    "flops",
    "layers",
    "metrics",
    "models",
    "point_model",
    "recalibrate_batchnorm",
    "saving",
    "splitting",
    "to_curve_model",
]
