"""The version of keras-bridge."""

__version__ = "0.2.0"
