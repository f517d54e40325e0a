"""keras-bridge: cheap deep ensembles through mode-connecting bridges."""

from keras_bridge import curves, layers, models
from keras_bridge.conversion import (
    point_model,
    recalibrate_batchnorm,
    to_curve_model,
)

__version__ = "0.1.0"
