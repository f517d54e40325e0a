"""The ``.keras`` archive of an ensemble: state in, state out.

`write` packs an ensemble's state (a plain dict, see `EnsembleArchive`)
into one Keras archive; `read` returns the backbone and that dict. This
module never sees `BridgeEnsemble` itself.
"""

import json
import math
import os
import zipfile

import keras

from keras_bridge import curves as curves_lib
from keras_bridge.atomic_files import atomic_write, check_target
from keras_bridge.backbone import feature_index
from keras_bridge.curve_model import point_statistics
from keras_bridge.curve_points import CurvePoints
from keras_bridge.inference import build_inference_model
from keras_bridge.members import BridgeMember, ModeMember, SharedMember

#: Version of the archive layout, stored in the file. 2: bridge heads are
#: `BridgeHead` or `TailHead`. 3: a shared trunk and its bridges. 4: curve
#: points as their statistics (`PointStatistics`). A file is written in
#: the oldest layout that holds what it holds.
FORMAT_VERSION = 4
#: Older layouts this version reads.
READABLE_VERSIONS = (2, 3, 4)


@keras.saving.register_keras_serializable(package="keras_bridge")
class PointStatistics(keras.layers.Layer):
    """The non-trainable weights of one curve point, for the archive.

    A curve point is the curve's weights at its ``t`` and its own
    BatchNormalization statistics
    (`keras_bridge.curve_model.point_statistics`): the archive stores
    these, not a whole network.

    Args:
        shapes: the shape of each array.
        dtypes: the dtype of each array (default float32).
        positions: the position of each array among the point's weights
            (`keras_bridge.curve_model.point_from_statistics`); default
            0, 1, ...
        **kwargs: forwarded to `keras.layers.Layer`.

    Example:

    >>> layer = PointStatistics([[4], [4]], positions=[2, 5])
    >>> layer.set_weights([np.zeros(4), np.ones(4)])
    >>> sorted(layer.statistics())
    [2, 5]
    """

    def __init__(self, shapes, dtypes=None, positions=None, **kwargs):
        super().__init__(**kwargs)
        self.shapes = [tuple(int(d) for d in shape) for shape in shapes]
        self.positions = [
            int(p) for p in (positions or range(len(self.shapes)))
        ]
        self.dtypes = list(dtypes or ["float32"] * len(self.shapes))
        self.arrays = [
            self.add_weight(
                shape=shape,
                dtype=dtype,
                initializer="zeros",
                trainable=False,
                name=f"array_{index}",
            )
            for index, (shape, dtype) in enumerate(
                zip(self.shapes, self.dtypes)
            )
        ]
        self.built = True

    def statistics(self) -> dict:
        """``{position: array}``, as `point_statistics` returned them."""
        return {
            position: variable.numpy()
            for position, variable in zip(self.positions, self.arrays)
        }

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "shapes": [list(shape) for shape in self.shapes],
            "dtypes": self.dtypes,
            "positions": self.positions,
        }


def _statistics_layer(statistics: dict) -> PointStatistics:
    positions = sorted(statistics)
    arrays = [statistics[position] for position in positions]
    layer = PointStatistics(
        [a.shape for a in arrays], [str(a.dtype) for a in arrays], positions
    )
    for variable, value in zip(layer.arrays, arrays):
        variable.assign(value)
    return layer


@keras.saving.register_keras_serializable(package="keras_bridge")
class EnsembleArchive(keras.Model):
    """Everything an ensemble holds, as one Keras object.

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
        heads: list of bridge heads, in the order of
            ``metadata["bridges"]``.
        points: list of materialised curve points, in the order of
            ``metadata["points"]``.
        shared: a list of the shared trunk's network, or an empty list.
        metadata: JSON-serializable dict of everything else.
        **kwargs: forwarded to `keras.Model`.

    Example:

    >>> path = ens.save("ensemble.keras")
    >>> archive = keras.saving.load_model("ensemble.keras")
    >>> tuple(archive(x_test)["probabilities"].shape)
    (360, 10)
    """

    def __init__(
        self, backbone, modes, curves, heads, points, metadata, shared=(),
        statistics=(), **kwargs,
    ):  # fmt: skip
        super().__init__(**kwargs)
        self.backbone = backbone
        self.modes = list(modes)
        self.shared = list(shared)
        self.curves = list(curves)
        self.heads = list(heads)
        self.points = list(points)
        self.statistics = list(statistics)
        self.metadata = dict(metadata)
        self._serving = None

    def build(self, input_shape=None):
        state = _state(self)
        members = [ModeMember(i) for i in range(len(self.modes))]
        members += [SharedMember()] if self.shared else []
        self._serving = build_inference_model(
            self.modes,
            feature_index(self.backbone, state["feature_layer"]),
            members + list(state["bridges"]),
            state["bridges"],
            state["temperature"],
            state["shared"],
        )
        self.built = True

    def call(self, inputs):
        return self._serving(inputs)

    def get_config(self) -> dict:
        def serialize(objects):
            return [_without_compile(o) for o in objects]

        config = {
            **super().get_config(),
            "backbone": _without_compile(self.backbone),
            "modes": serialize(self.modes),
            "curves": serialize(self.curves),
            "heads": serialize(self.heads),
            "points": serialize(self.points),
            "metadata": self.metadata,
        }
        # Absent when empty: older versions read the file (format 2 or 3).
        if self.shared:
            config["shared"] = serialize(self.shared)
        if self.statistics:
            config["statistics"] = serialize(self.statistics)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        version = config["metadata"].get("format_version", 0)
        if version not in READABLE_VERSIONS:
            raise ValueError(
                f"The file holds an ensemble in format {version}; this "
                f"keras-bridge reads formats {list(READABLE_VERSIONS)}. "
                "Save it again with the keras-bridge that wrote it, or refit "
                "its bridges."
            )

        def deserialize(item):
            return keras.saving.deserialize_keras_object(
                item, custom_objects=custom_objects
            )

        config["backbone"] = deserialize(config["backbone"])
        for key in (
            "modes", "curves", "heads", "points", "shared", "statistics",
        ):  # fmt: skip
            config[key] = [deserialize(item) for item in config.get(key, [])]
        return cls(**config)


def _without_compile(model) -> dict:
    """A model's config without its training setup: the archive is for
    inference and for fitting more bridges, not for resuming training."""
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


def _state(archive) -> dict:
    meta = archive.metadata
    return {
        "feature_layer": meta["feature_layer"],
        "seed": meta["seed"],
        "curve": curves_lib.get(meta["curve"]),
        "modes": list(archive.modes),
        "curves": {
            tuple(pair): model
            for pair, model in zip(meta["curve_pairs"], archive.curves)
        },
        "curve_checks": {
            tuple(pair): checks for pair, checks in meta["curve_checks"]
        },
        "bridges": {
            BridgeMember(
                s["kind"],
                tuple(s["pair"]),
                s["point"],
                shared=s.get("shared", False),
            ): head
            for s, head in zip(meta["bridges"], archive.heads)
        },
        "shared": archive.shared[0] if archive.shared else None,
        "points": {
            (tuple(pair), float(t)): model
            for (pair, t), model in zip(meta["points"], archive.points)
        },
        "point_statistics": {
            (tuple(pair), float(t)): layer.statistics()
            for (pair, t), layer in zip(
                meta.get("point_statistics", []), archive.statistics
            )
        },
        "temperature": meta["temperature"],
        "mode_epochs": meta.get("mode_epochs"),
        "anchor": meta.get("anchor", 0),
    }


def write(filepath, backbone, state: dict, overwrite=None) -> str:
    """Writes an ensemble's ``state`` and ``backbone`` to a ``.keras`` file.

    ``state`` has the keys ``feature_layer``, ``seed``, ``curve``,
    ``modes``, ``curves`` ({pair: curve model}), ``curve_checks``,
    ``bridges`` ({`BridgeMember`: head}), ``points`` ({(pair, t): model},
    or a `keras_bridge.curve_points.CurvePoints`), ``shared`` (the shared
    trunk's network or None), ``temperature``, ``mode_epochs`` and
    ``anchor``. A point that is the curve's weights at its t but for its
    non-trainable weights (as the ensemble makes them) is stored as those
    weights (`PointStatistics`), any other as a whole model. The file is
    written
    atomically (`keras_bridge.atomic_files.atomic_write`). An existing file is
    replaced when it is an ensemble archive (``overwrite=None``), in any
    case (``True``) or never (``False``).

    Returns:
        The absolute path written.

    Example:

    >>> backbone, state = read("ensemble.keras")
    >>> os.path.basename(write("copy.keras", backbone, state))
    'copy.keras'
    """
    filepath = os.fspath(filepath)
    if not filepath.endswith(".keras"):
        raise ValueError(
            "`filepath` must end in '.keras' (Keras' archive format); "
            f"received {filepath!r}."
        )
    replaces = None
    if overwrite is None:
        overwrite, replaces = True, not_an_ensemble
    check_target(filepath, False, overwrite, "filepath", replaces)
    curve_pairs = sorted(state["curves"])
    points, statistics = _split_points(
        state["points"], state["curves"], backbone
    )
    point_keys, statistics_keys = sorted(points), sorted(statistics)
    metadata = {
        # The oldest layout that holds it: older versions of keras-bridge
        # still read a file without a shared trunk or point statistics.
        "format_version": (
            FORMAT_VERSION
            if statistics
            else 3
            if state["shared"] is not None
            else 2
        ),
        "feature_layer": state["feature_layer"],
        "seed": state["seed"],
        "curve": keras.saving.serialize_keras_object(state["curve"]),
        "temperature": float(state["temperature"]),
        "mode_epochs": state["mode_epochs"],
        "anchor": state["anchor"],
        "curve_pairs": [list(pair) for pair in curve_pairs],
        "curve_checks": [
            [list(pair), checks]
            for pair, checks in state["curve_checks"].items()
        ],
        "bridges": [
            {
                "kind": b.kind,
                "pair": list(b.pair),
                "point": b.point,
                "shared": b.shared,
            }
            for b in state["bridges"]
        ],
        "points": [[list(pair), t] for pair, t in point_keys],
    }
    if statistics:
        metadata["point_statistics"] = [
            [list(pair), t] for pair, t in statistics_keys
        ]
    archive = EnsembleArchive(
        backbone=backbone,
        modes=state["modes"],
        curves=[state["curves"][pair] for pair in curve_pairs],
        heads=list(state["bridges"].values()),
        points=[points[key] for key in point_keys],
        shared=[] if state["shared"] is None else [state["shared"]],
        statistics=[
            _statistics_layer(statistics[key]) for key in statistics_keys
        ],
        metadata=metadata,
        name="bridge_ensemble_archive",
    )
    archive.build()
    with atomic_write(
        filepath, overwrite=overwrite, suffix=".keras", replaces=replaces
    ) as tmp:
        keras.saving.save_model(archive, tmp)
    return os.path.abspath(filepath)


def _split_points(points, curves, template) -> tuple:
    """``points`` as ``({key: model}, {key: statistics})``: the second
    holds each point that `point_statistics` can describe (read without
    building a point not built yet)."""
    models, statistics = {}, {}
    for key in points:
        unbuilt = None
        if isinstance(points, CurvePoints):
            unbuilt = points.statistics(key)
        if unbuilt is None:
            pair, t = key
            if pair in curves:
                unbuilt = point_statistics(
                    points[key], curves[pair], t, template
                )
        if unbuilt is None:
            models[key] = points[key]
        else:
            statistics[key] = unbuilt
    return models, statistics


def not_an_ensemble(filepath) -> str | None:
    """None when ``filepath`` is a ``.keras`` archive of an ensemble (one
    `write` wrote), else what it holds: `BridgeEnsemble.save` replaces
    only an ensemble unless told ``overwrite=True``.

    Example:

    >>> not_an_ensemble("ensemble.keras") is None
    True
    >>> ens.backbone.save("backbone.keras")
    >>> print(not_an_ensemble("backbone.keras"))
    holds a Functional, not a keras-bridge ensemble: `save` replaces only
    an ensemble archive unless you pass `overwrite=True`
    """
    config = _archive_config(filepath)
    name = None
    if isinstance(config, dict):
        name = config.get("registered_name") or config.get("class_name")
    if name == "keras_bridge>EnsembleArchive":
        return None
    what = f"holds a {name}" if name else "is not a Keras archive"
    return (
        f"{what}, not a keras-bridge ensemble: `save` replaces only an "
        "ensemble archive unless you pass `overwrite=True`"
    )


def read(filepath, custom_objects=None, safe_mode: bool = True) -> tuple:
    """Reads a file written by `write`: ``(backbone, state)``.

    Raises:
        FileNotFoundError: when ``filepath`` does not exist.
        ValueError: when it is not a complete ``.keras`` archive of an
            ensemble, or names a class that is not registered.

    Example:

    >>> backbone, state = read("ensemble.keras")
    >>> [bridge.name for bridge in state["bridges"]]
    ['type1_0-1_r0.5', 'type2_0-1_r0.5', 'type1_0-1_rany']
    """
    filepath = os.fspath(filepath)
    if os.path.isdir(filepath):
        raise ValueError(
            f"`filepath` {filepath!r} is a folder; pass the .keras file "
            "that `BridgeEnsemble.save` wrote."
        )
    if not os.path.isfile(filepath):
        raise FileNotFoundError(f"`filepath` {filepath!r} does not exist.")
    _check_archive(filepath)
    _check_metadata(filepath)
    name = _unregistered_class(_archive_config(filepath), custom_objects)
    if name is not None:
        raise ValueError(
            f"{filepath!r} uses the class {name!r}, which is not "
            "registered: import the module that defines it (decorated with "
            "`@keras.saving.register_keras_serializable()`), or pass it as "
            f"`custom_objects={{'{name}': {name}}}`."
        )
    archive = keras.saving.load_model(
        filepath, custom_objects=custom_objects, safe_mode=safe_mode
    )
    if not isinstance(archive, EnsembleArchive):
        raise ValueError(
            f"`filepath` must be a file written by `BridgeEnsemble.save`; "
            f"{filepath!r} holds a {type(archive).__name__}. "
            "Use `BridgeEnsemble.set_modes` for plain models."
        )
    return archive.backbone, _state(archive)


#: Packages whose classes Keras finds by importing their module; any other
#: class must be registered or passed in ``custom_objects``.
_IMPORTED_PACKAGES = {"keras", "keras_hub", "keras_cv", "keras_nlp"}


def _unregistered_class(config, custom_objects=None):
    """The name of the first class in a ``.keras`` archive's config that
    Keras cannot locate when loading it, or None."""
    if isinstance(config, list):
        found = (_unregistered_class(item, custom_objects) for item in config)
        return next((name for name in found if name is not None), None)
    if not isinstance(config, dict):
        return None
    name, module = config.get("class_name"), config.get("module")
    if (
        isinstance(name, str)
        and "module" in config  # None for a class defined in __main__
        and isinstance(config.get("config"), dict)
        and not name.startswith("__")
        and str(module or "").split(".")[0] not in _IMPORTED_PACKAGES
    ):
        registered = config.get("registered_name", name)
        found = keras.saving.get_registered_object(registered, custom_objects)
        if found is None and name not in (custom_objects or {}):
            return name
    return _unregistered_class(list(config.values()), custom_objects)


def _check_archive(filepath: str) -> None:
    problem = None
    if os.path.getsize(filepath) == 0:
        problem = "it is empty"
    elif not zipfile.is_zipfile(filepath):
        problem = "it is not a zip archive (truncated or not a .keras file)"
    else:
        try:
            with zipfile.ZipFile(filepath) as archive:
                names = set(archive.namelist())
                bad = archive.testzip()
            if bad is not None:
                problem = f"its member {bad!r} is corrupt"
            elif not {"config.json", "model.weights.h5"} <= names:
                problem = "it lacks config.json or model.weights.h5"
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            problem = f"it cannot be read ({error})"
    if problem:
        raise ValueError(
            f"`filepath` {filepath!r} is not a valid .keras file written by "
            f"`BridgeEnsemble.save`: {problem}."
        )


def _is_index(value, size) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and 0 <= value < size
    )


def _is_pair(pair, size) -> bool:
    return (
        isinstance(pair, list)
        and len(pair) == 2
        and all(_is_index(i, size) for i in pair)
        and pair[0] != pair[1]
    )


def _is_point(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and 0.0 <= value <= 1.0
    )


def _metadata_problem(config: dict):
    """What is wrong with an archive's metadata (hand-edited, say), or
    None: every field `_state` reads, checked against the archive."""
    meta = config.get("metadata")
    if not isinstance(meta, dict):
        return "it has no metadata"
    required = (
        "feature_layer", "seed", "curve", "temperature", "curve_pairs",
        "curve_checks", "bridges", "points",
    )  # fmt: skip
    missing = [key for key in required if key not in meta]
    if missing:
        return f"its metadata lacks {missing}"
    num_modes = len(config.get("modes", []))
    backbone = config.get("backbone", {}).get("config", {})
    layers = [layer.get("name") for layer in backbone.get("layers", [])]
    temperature, epochs = meta["temperature"], meta.get("mode_epochs")
    checks = {
        "anchor": _is_index(meta.get("anchor", 0), max(num_modes, 1)),
        "temperature": isinstance(temperature, (int, float))
        and not isinstance(temperature, bool)
        and math.isfinite(temperature)
        and temperature > 0,
        "feature_layer": meta["feature_layer"] in layers,
        "seed": meta["seed"] is None or _is_index(meta["seed"], 2**63),
        "mode_epochs": epochs is None
        or (_is_index(epochs, 2**63) and epochs >= 1),
        "curve_pairs": isinstance(meta["curve_pairs"], list)
        and len(meta["curve_pairs"]) == len(config.get("curves", []))
        and all(_is_pair(p, num_modes) for p in meta["curve_pairs"]),
        "bridges": isinstance(meta["bridges"], list)
        and len(meta["bridges"]) == len(config.get("heads", []))
        and all(
            isinstance(b, dict)
            and b.get("kind") in ("type1", "type2")
            and _is_pair(b.get("pair"), num_modes)
            and (b.get("point") == "any" or _is_point(b.get("point")))
            for b in meta["bridges"]
        ),
        "points": isinstance(meta["points"], list)
        and len(meta["points"]) == len(config.get("points", []))
        and all(
            isinstance(p, list)
            and len(p) == 2
            and _is_pair(p[0], num_modes)
            and _is_point(p[1])
            for p in meta["points"]
        ),
        "point_statistics": isinstance(meta.get("point_statistics", []), list)
        and len(meta.get("point_statistics", []))
        == len(config.get("statistics", []))
        and all(
            isinstance(p, list)
            and len(p) == 2
            and p[0] in meta["curve_pairs"]
            and _is_point(p[1])
            for p in meta.get("point_statistics", [])
        ),
    }
    bad = [key for key, ok in checks.items() if not ok]
    if bad:
        shown = {key: meta.get(key) for key in bad}
        return (
            f"its metadata field(s) {bad} do not fit the archive "
            f"({num_modes} modes): {shown}"
        )
    return None


def _archive_config(filepath):
    """The JSON of a ``.keras`` archive's ``config.json``, or None when
    it cannot be read (not a zip, no such member, not JSON)."""
    try:
        with zipfile.ZipFile(filepath) as archive:
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, OSError, EOFError, LookupError, ValueError):
        return None


def _check_metadata(filepath: str) -> None:
    """Refuses a file whose metadata is not what `write` writes, with an
    error naming the file and the field, before Keras builds anything."""
    config = _archive_config(filepath)
    if not isinstance(config, dict):
        problem = "its config.json cannot be read"
    else:
        config = config.get("config", {})
        if config.get("metadata") is None and "modes" not in config:
            return  # not an ensemble: `read` says what it holds
        problem = _metadata_problem(config)
    if problem:
        raise ValueError(
            f"`filepath` {filepath!r} is not a valid ensemble archive: "
            f"{problem}. Was it edited by hand? Save the ensemble again "
            "with `BridgeEnsemble.save`."
        )
