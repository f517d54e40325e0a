"""keras-bridge: cheap deep ensembles through mode-connecting bridges."""

from keras_bridge import curves, data, layers, metrics, models
from keras_bridge.conversion import (
    point_model,
    recalibrate_batchnorm,
    to_curve_model,
)
from keras_bridge.ensemble import BridgeEnsemble, CurveProfile

__version__ = "0.1.0"
