"""How `BridgeEnsemble` leaves the process: export, save and load.

Part of the `BridgeEnsemble` facade; `export` and `save` read its state,
`load` builds a new ensemble.
"""

from keras_bridge import archive, export, training
from keras_bridge.curve_points import CurvePoints


class SavingMixin:
    """`export`, `save` and `load` of `BridgeEnsemble`.

    Its contract with the host class: the host is built as
    ``cls(backbone, feature_layer=..., num_modes=..., seed=..., curve=...)``,
    has the public state `save` writes (``backbone``, ``feature_layer``,
    ``seed``, ``curve``, ``modes``, ``curves``, ``curve_checks``,
    ``bridges``, ``curve_points``, ``shared``, ``temperature``,
    ``mode_epochs``, ``anchor``, all settable), `members` and
    `inference_model`, and implements `_check_finite` below.
    """

    def _check_finite(self, stage, consequence="Nothing was kept.") -> None:
        """Refuses, with a `ValueError` naming ``stage``, a member whose
        weights are not all finite."""
        raise NotImplementedError

    def export(
        self,
        filepath,
        format="tf_saved_model",
        verbose=True,
        *,
        members=None,
        overwrite=None,
        quantization=None,
        opset_version=None,
    ) -> str:
        """Exports the ensemble for serving, as one multi-output model.

        The arguments follow Keras' `Model.export`: ``filepath``,
        ``format`` (Keras' names), ``verbose``, and format options by
        keyword.

        ``format="tf_saved_model"`` writes a SavedModel for TF Serving to
        a version folder, ``<base>/<model_name>/<version>``; its
        ``serving_default`` signature takes ``inputs`` (any batch size)
        and returns the outputs of `inference_model`, and its ``members``
        signature each member's probabilities (see `keras_bridge.export`).
        ``format="onnx"`` writes one ``.onnx`` file with the same input
        and outputs (``pip install keras-bridge[onnx]``).
        ``format="litert"`` writes one ``.tflite`` file for LiteRT
        (TensorFlow Lite, on-device) whose ``serving_default`` signature
        has the same input and outputs, optionally quantised. The member
        order and temperature go with every format
        (`keras_bridge.export.read_litert_metadata`, ...).

        Written atomically. As for `save`, an existing ``filepath`` is
        replaced by default only when it is an earlier keras-bridge export
        of the same format; ``overwrite=True`` also replaces any other
        SavedModel, empty folder or file of the format, and
        ``overwrite=False`` nothing. A folder that is not a SavedModel (a
        model's folder of versions, say) is always refused, so a
        forgotten version number loses nothing. Refused when a weight is
        not finite.

        Args:
            filepath: the SavedModel's version folder, or the ``.onnx``
                or ``.tflite`` file.
            format: ``"tf_saved_model"``, ``"onnx"`` or ``"litert"``.
            verbose: print where the model was written (None: True,
                as Keras' default).
            members: member names to serve (e.g. from `select_members`);
                default all, in the order of `member_names`.
            overwrite: None (default): replace only an earlier
                keras-bridge export of the format, else
                `FileExistsError`; True: also any other SavedModel,
                empty folder or file of the format; False: never
                replace (`FileExistsError`).
            quantization: LiteRT only: None (float32),
                ``"dynamic_range"`` (int8 weights) or ``"float16"``
                (float16 weights); see
                `keras_bridge.export.litert.export_litert`.
            opset_version: ONNX only: the ONNX opset; tf2onnx's default
                when None.

        Returns:
            The absolute path written.

        Example:

        >>> members = ["mode_0", "type1_0-1_r0.5"]  # default: all
        >>> path = ens.export("serving/digits/1", members=members,
        ...     verbose=False)
        >>> path = ens.export("digits.onnx", format="onnx",
        ...     members=members, verbose=False)
        >>> path = ens.export("digits.tflite", format="litert",
        ...     members=members, verbose=False, quantization="dynamic_range")
        >>> import tensorflow as tf
        >>> interpreter = tf.lite.Interpreter(model_path=path)
        >>> runner = interpreter.get_signature_runner("serving_default")
        >>> outputs = runner(inputs=x_test[:3])
        >>> outputs["class_ids"].shape, outputs["member_probabilities"].shape
        ((3,), (3, 2, 10))
        """
        if verbose is None:  # Keras' "the format's default"
            verbose = True
        if not isinstance(verbose, (bool, int)):
            raise ValueError(
                "`verbose` must be True or False; received "
                f"verbose={verbose!r}. Pass `members` by keyword."
            )
        export.check_arguments(format, quantization, opset_version)
        # A destination that may not be written is refused before any
        # graph is built.
        overwrite = export.check_destination(filepath, format, overwrite)
        model = self.inference_model(members)
        training.check_finite_weights(model, "export")
        names = [m.name for m in self.members(members)]
        info = export.metadata.describe(model, names, self.temperature)
        return export.export(
            model,
            filepath,
            info,
            format,
            overwrite=overwrite,
            verbose=verbose,
            quantization=quantization,
            opset_version=opset_version,
        )

    def save(self, filepath, overwrite: bool | None = None) -> str:
        """Saves the whole ensemble to one ``.keras`` file, atomically.

        Modes, curves, bridges, cached curve points and the temperature
        go into one Keras archive; `BridgeEnsemble.load` reads it back,
        and `keras.saving.load_model` alone gives a model that returns
        the serving outputs. Refused when a weight is not finite.

        As with Keras' ``save``, an existing ensemble archive is replaced
        by default; any other file (a user's Keras model, say) is
        replaced only with an explicit ``overwrite=True``. `export` has
        the same default.

        Args:
            filepath: a path ending in ``.keras``.
            overwrite: None (default): replace an existing file only when
                it is a keras-bridge ensemble archive, else `ValueError`;
                True: replace any existing file; False: never replace
                (`FileExistsError`).

        Returns:
            The absolute path written.

        Example:

        >>> path = ens.save("ensemble.keras")
        >>> ens2 = keras_bridge.BridgeEnsemble.load("ensemble.keras")
        >>> ens2.member_names() == ens.member_names()
        True
        """
        if not self.modes:
            raise ValueError(
                "Nothing to save: the ensemble has no modes yet. Call "
                "`fit_modes` or `set_modes` first."
            )
        self._check_finite("save")
        state = {
            key: getattr(self, key)
            for key in ("feature_layer", "seed", "curve", "modes", "curves")
        }
        state.update(
            curve_checks=self.curve_checks,
            bridges=self.bridges,
            points=self.curve_points,
            shared=self.shared,
            temperature=self.temperature,
            mode_epochs=self.mode_epochs,
            anchor=self.anchor,
        )
        return archive.write(filepath, self.backbone, state, overwrite)

    @classmethod
    def load(cls, filepath, *, custom_objects=None, safe_mode=True):
        """Loads an ensemble written by `save`.

        The arguments are those of `keras.saving.load_model`, in its
        order (by keyword).

        Args:
            filepath: the ``.keras`` file.
            custom_objects: classes of a custom backbone's layers that are
                not registered, by name.
            safe_mode: Keras' ``safe_mode`` (no arbitrary code is run).

        Returns:
            A `BridgeEnsemble` whose predictions equal the saved one's.
        """
        backbone, state = archive.read(
            filepath, custom_objects=custom_objects, safe_mode=safe_mode
        )
        ens = cls(
            backbone,
            feature_layer=state.pop("feature_layer"),
            num_modes=max(1, len(state["modes"])),
            seed=state.pop("seed"),
            curve=state.pop("curve"),
        )
        ens.num_modes = len(state["modes"])
        points = CurvePoints(state.pop("points"))
        for key, statistics in state.pop("point_statistics").items():
            points.add_statistics(
                key, state["curves"][key[0]], ens.backbone, statistics
            )
        state["curve_points"] = points
        for key, value in state.items():
            setattr(ens, key, value)
        return ens
