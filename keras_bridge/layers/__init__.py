"""Layers of keras-bridge."""

from keras_bridge.layers.curve_layer import CurveLayer

__all__ = ["CurveLayer"]
