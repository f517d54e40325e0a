"""keras-bridge: cheap deep ensembles through mode-connecting bridges."""

from keras_bridge import curves, data, layers, metrics, models, splitting
from keras_bridge.conversion import (
    point_model,
    recalibrate_batchnorm,
    to_curve_model,
)
from keras_bridge.ensemble import BridgeEnsemble, CurveProfile

__version__ = "0.1.0"

__all__ = [
    "BridgeEnsemble",
    "CurveProfile",
    "curves",
    "data",
    "layers",
    "metrics",
    "models",
    "point_model",
    "recalibrate_batchnorm",
    "splitting",
    "to_curve_model",
]
