"""Layers of keras-bridge."""

from keras_bridge.layers.bridge_head import BaseBridgeHead, BridgeHead, TailHead
from keras_bridge.layers.curve_layer import CurveLayer
from keras_bridge.layers.ensemble_outputs import EnsembleOutputs

__all__ = [
    "BaseBridgeHead",
    "BridgeHead",
    "CurveLayer",
    "EnsembleOutputs",
    "TailHead",
]
