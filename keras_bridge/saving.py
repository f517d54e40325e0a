"""Saving a whole `BridgeEnsemble` to one ``.keras`` file and back."""

import os

import keras

from keras_bridge import bridges as bridges_lib
from keras_bridge import curves as curves_lib

#: Version of the archive layout, stored in the file.
FORMAT_VERSION = 1


@keras.saving.register_keras_serializable(package="keras_bridge")
class EnsembleArchive(keras.Model):
    """Everything a `BridgeEnsemble` holds, as one Keras object.

    The container Keras' ``.keras`` format saves: its config holds the
    architecture of every sub-model and the ensemble's metadata (feature
    layer, curve family, temperature, the bridges' kinds, pairs and
    points), and its weights file holds all their weights. It needs no
    custom code beyond keras-bridge's registered classes, so it loads with
    ``safe_mode=True``. Called on inputs, it returns the ensemble's serving
    outputs, so `keras.saving.load_model` alone gives a working model.

    Use `BridgeEnsemble.save` and `BridgeEnsemble.load` rather than this
    class directly.

    Args:
        backbone: the ensemble's backbone (its architecture).
        modes: list of the mode models.
        curves: list of curve models, in the order of
            ``metadata["curve_pairs"]``.
        heads: list of `BridgeHead` layers, in the order of
            ``metadata["bridges"]``.
        points: list of materialised curve points, in the order of
            ``metadata["points"]``.
        metadata: JSON-serializable dict of everything else.
        **kwargs: forwarded to `keras.Model`.

    Example:

    >>> ens.save("ensemble.keras")
    >>> archive = keras.saving.load_model("ensemble.keras")
    >>> archive(x)["probabilities"].shape
    (360, 10)
    """

    def __init__(
        self, backbone, modes, curves, heads, points, metadata, **kwargs
    ):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.modes = list(modes)
        self.curves = list(curves)
        self.heads = list(heads)
        self.points = list(points)
        self.metadata = dict(metadata)
        self._serving = None

    def build(self, input_shape=None):
        self._serving = to_ensemble(self).inference_model()
        self.built = True

    def call(self, inputs):
        return self._serving(inputs)

    def get_config(self) -> dict:
        def serialize(objects):
            return [_without_compile(o) for o in objects]

        return {
            **super().get_config(),
            "backbone": _without_compile(self.backbone),
            "modes": serialize(self.modes),
            "curves": serialize(self.curves),
            "heads": serialize(self.heads),
            "points": serialize(self.points),
            "metadata": self.metadata,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)

        def deserialize(item):
            return keras.saving.deserialize_keras_object(
                item, custom_objects=custom_objects
            )

        config["backbone"] = deserialize(config["backbone"])
        for key in ("modes", "curves", "heads", "points"):
            config[key] = [deserialize(item) for item in config[key]]
        return cls(**config)


def _without_compile(model) -> dict:
    """A model's config without its training setup: the archive is for
    inference and for fitting more bridges, not for resuming training."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


def to_archive(ens) -> EnsembleArchive:
    """Packs ``ens`` into an `EnsembleArchive` (sharing its objects)."""
    if not ens.modes:
        raise ValueError(
            "Nothing to save: the ensemble has no modes yet. Call "
            "`fit_modes` or `set_modes` first."
        )
    for head in (bridge.head for bridge in ens.bridges.values()):
        if not head.built:
            raise ValueError(f"Bridge head {head.name!r} is not built.")
    curve_pairs = sorted(ens.curves)
    point_keys = sorted(ens._points)
    metadata = {
        "format_version": FORMAT_VERSION,
        "feature_layer": ens.feature_layer,
        "num_modes": ens.num_modes,
        "seed": ens.seed,
        "curve": keras.saving.serialize_keras_object(ens.curve),
        "temperature": float(ens.temperature),
        "mode_epochs": ens._mode_epochs,
        "curve_pairs": [list(pair) for pair in curve_pairs],
        "curve_checks": [
            [list(pair), checks] for pair, checks in ens.curve_checks.items()
        ],
        "bridges": [
            {"kind": b.kind, "pair": list(b.pair), "point": b.point}
            for b in ens.bridges.values()
        ],
        "points": [[list(pair), t] for pair, t in point_keys],
    }
    archive = EnsembleArchive(
        backbone=ens.backbone,
        modes=ens.modes,
        curves=[ens.curves[pair] for pair in curve_pairs],
        heads=[bridge.head for bridge in ens.bridges.values()],
        points=[ens._points[key] for key in point_keys],
        metadata=metadata,
        name="bridge_ensemble_archive",
    )
    archive.build()
    return archive


def to_ensemble(archive: EnsembleArchive):
    """Rebuilds a `BridgeEnsemble` from an `EnsembleArchive`."""
    from keras_bridge.ensemble import BridgeEnsemble

    meta = archive.metadata
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"The file was written by a newer keras-bridge (format "
            f"{meta['format_version']}); this one reads format "
            f"{FORMAT_VERSION} and older. Upgrade keras-bridge."
        )
    ens = BridgeEnsemble(
        archive.backbone,
        feature_layer=meta["feature_layer"],
        num_modes=meta["num_modes"],
        seed=meta["seed"],
        curve=curves_lib.get(meta["curve"]),
    )
    ens.modes = list(archive.modes)
    ens.curves = {
        tuple(pair): model
        for pair, model in zip(meta["curve_pairs"], archive.curves)
    }
    ens.curve_checks = {
        tuple(pair): checks for pair, checks in meta["curve_checks"]
    }
    for spec, head in zip(meta["bridges"], archive.heads):
        bridge = bridges_lib.Bridge(
            spec["kind"], tuple(spec["pair"]), spec["point"], head
        )
        ens.bridges[bridge.name] = bridge
    ens._points = {
        (tuple(pair), float(t)): model
        for (pair, t), model in zip(meta["points"], archive.points)
    }
    ens.temperature = meta["temperature"]
    ens._mode_epochs = meta["mode_epochs"]
    return ens


def save_ensemble(ens, filepath, overwrite: bool = True) -> None:
    """Writes ``ens`` to a ``.keras`` file (see `BridgeEnsemble.save`).

    Example:

    >>> save_ensemble(ens, "ensemble.keras")
    """
    filepath = os.fspath(filepath)
    if not filepath.endswith(".keras"):
        raise ValueError(
            "`filepath` must end in '.keras' (Keras' archive format); "
            f"received {filepath!r}."
        )
    if os.path.exists(filepath) and not overwrite:
        raise FileExistsError(
            f"{filepath!r} exists; pass `overwrite=True` to replace it."
        )
    archive = to_archive(ens)
    directory = os.path.dirname(os.path.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(
        directory, f".{os.path.basename(filepath)}.{os.getpid()}.tmp.keras"
    )
    try:
        keras.saving.save_model(archive, temporary)
        os.replace(temporary, filepath)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_ensemble(filepath, safe_mode: bool = True):
    """Reads a `BridgeEnsemble` saved by `save_ensemble`.

    Example:

    >>> ens = load_ensemble("ensemble.keras")
    """
    archive = keras.saving.load_model(filepath, safe_mode=safe_mode)
    if not isinstance(archive, EnsembleArchive):
        raise ValueError(
            f"`filepath` must be a file written by `BridgeEnsemble.save`; "
            f"{os.fspath(filepath)!r} holds a {type(archive).__name__}. "
            "Use `BridgeEnsemble.set_modes` for plain models."
        )
    return to_ensemble(archive)
