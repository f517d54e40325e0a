"""How `BridgeEnsemble` leaves the process: export, save and load.

Part of the `BridgeEnsemble` facade; `export` and `save` read its state,
`load` builds a new ensemble.
"""

from keras_bridge import export, saving, training


class PersistenceMixin:
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
        path,
        format="tf_saved_model",
        members=None,
        overwrite=False,
        verbose=True,
        quantization=None,
    ) -> str:
        """Exports the ensemble for serving, as one multi-output model.

        ``format="tf_saved_model"`` writes a SavedModel for TF Serving to
        a version folder, ``<base>/<model_name>/<version>``; its
        ``serving_default`` signature takes ``inputs`` (any batch size)
        and returns the outputs of `inference_model`, and its ``members``
        signature each member's probabilities (see `keras_bridge.export`).
        ``format="onnx"`` writes one ``.onnx`` file with the same input
        and outputs (``pip install keras-bridge[onnx]``).
        ``format="tflite"`` writes one ``.tflite`` file for LiteRT
        (on-device) whose ``serving_default`` signature has the same
        input and outputs, optionally quantised; the member order and
        temperature are embedded in it
        (`keras_bridge.export.read_tflite_metadata`). Written atomically;
        an existing ``path`` is replaced only with ``overwrite=True``, and
        only when it is what an export writes: a SavedModel folder (one
        holding ``saved_model.pb``), an empty folder, or a ``.onnx`` or
        ``.tflite`` file. Any other folder (a model's folder of versions,
        say) is refused, so a forgotten version number loses nothing.
        Refused when a weight is not finite.

        Args:
            path: the SavedModel's version folder, or the ``.onnx`` or
                ``.tflite`` file.
            format: ``"tf_saved_model"``, ``"onnx"`` or ``"tflite"``.
            members: member names to serve (e.g. from `select_members`);
                default all, in the order of `member_names`.
            overwrite: replace an existing SavedModel, empty folder or
                file of the format at ``path``.
            verbose: print where the model was written.
            quantization: TFLite only: None (float32),
                ``"dynamic_range"`` (int8 weights) or ``"float16"``
                (float16 weights); see `keras_bridge.export.export_tflite`.

        Returns:
            The absolute path written.

        Example:

        >>> path = ens.export("serving/digits/1", verbose=False)
        >>> path = ens.export("digits.onnx", format="onnx", verbose=False)
        >>> path = ens.export("digits.tflite", format="tflite",
        ...     quantization="dynamic_range", verbose=False)
        >>> import tensorflow as tf
        >>> interpreter = tf.lite.Interpreter(model_path=path)
        >>> runner = interpreter.get_signature_runner("serving_default")
        >>> runner(inputs=x_test[:3])["class_ids"].shape
        (3,)
        """
        export.check_arguments(format, quantization)
        model = self.inference_model(members)
        training.check_finite_weights(model, "export")
        names = [m.name for m in self.members(members)]
        info = export.metadata(model, names, self.temperature)
        return export.export(
            model, path, info, format, overwrite, verbose, quantization
        )

    def save(self, filepath, overwrite: bool | None = None) -> str:
        """Saves the whole ensemble to one ``.keras`` file, atomically.

        Modes, curves, bridges, cached curve points and the temperature
        go into one Keras archive; `BridgeEnsemble.load` reads it back,
        and `keras.saving.load_model` alone gives a model that returns
        the serving outputs. Refused when a weight is not finite.

        As with Keras' ``save``, an existing ensemble archive is replaced
        by default; any other file (a user's Keras model, say) is
        replaced only with an explicit ``overwrite=True``.

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
        return saving.write(filepath, self.backbone, state, overwrite)

    @classmethod
    def load(cls, filepath, safe_mode=True, custom_objects=None):
        """Loads an ensemble written by `save`.

        Args:
            filepath: the ``.keras`` file.
            safe_mode: Keras' ``safe_mode`` (no arbitrary code is run).
            custom_objects: classes of a custom backbone's layers that are
                not registered, by name.

        Returns:
            A `BridgeEnsemble` whose predictions equal the saved one's.
        """
        backbone, state = saving.read(filepath, safe_mode, custom_objects)
        ens = cls(
            backbone,
            feature_layer=state.pop("feature_layer"),
            num_modes=max(1, len(state["modes"])),
            seed=state.pop("seed"),
            curve=state.pop("curve"),
        )
        ens.num_modes = len(state["modes"])
        state["curve_points"] = state.pop("points")
        for key, value in state.items():
            setattr(ens, key, value)
        return ens
