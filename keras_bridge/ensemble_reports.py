"""What `BridgeEnsemble` reports: curve profiles, the evaluation report,
and member selection.

Part of the `BridgeEnsemble` facade (as `keras.Model` takes its training
methods from `Trainer`); it reads the ensemble's state and changes nothing.
"""

import numpy as np
import tensorflow as tf

from keras_bridge import arguments, curve_training, evaluation, training
from keras_bridge import curves as curves_lib
from keras_bridge import metrics as metrics_lib
from keras_bridge.curve_model import to_curve_model
from keras_bridge.curve_profile import CurveProfile
from keras_bridge.flop_count import flops
from keras_bridge.inference import member_flops
from keras_bridge.members import BridgeMember, source_member


class ReportsMixin:
    """`curve_profile`, `evaluate` and `select_members` of
    `BridgeEnsemble`.

    Its contract with the host class: the host has the public state
    (``backbone``, ``modes``, ``curves``, ``anchor``), `default_pair`,
    `members`, `member_names`, `point_model` and `inference_model`, and
    implements the checks below.
    """

    def _data(self, data, argument, stage, needs_labels=True):
        """``(dataset, steps per epoch)``: ``data`` checked against the
        ensemble's input shape and classes
        (`keras_bridge.data_checks.checked`), errors naming ``argument``
        and ``stage``."""
        raise NotImplementedError

    def _pairs(self, pairs, argument="pairs") -> list:
        """``pairs`` checked as pairs of mode indices (fitted or not)."""
        raise NotImplementedError

    def _check_finite(self, stage, consequence="Nothing was kept.") -> None:
        """Refuses, with a `ValueError` naming ``stage``, a member whose
        weights are not all finite."""
        raise NotImplementedError

    def curve_profile(
        self, data, pair=None, num_points: int = 11, bn_data=None,
        verbose="auto",
    ) -> CurveProfile:  # fmt: skip
        """Accuracy and NLL along the curve (or the straight line).

        When no curve is fitted for ``pair``, the straight line between the
        two modes is measured: the barrier that curve training removes.

        Args:
            data: labelled data to score on.
            pair: the two mode indices; default `default_pair` (the
                anchor's first curve, or the anchor and the first other
                mode before any curve is fitted).
            num_points: evenly spaced t values from 0 to 1 (at least 2).
            bn_data: data for the BatchNorm statistics at each point;
                default ``data``.
            verbose: 0 (silent), 1 or ``"auto"`` (a progress bar) or 2
                (one line when done).

        Returns:
            A `CurveProfile` (printable; `.t`, `.accuracy`, `.nll`).
        """
        stage = "curve_profile"
        pair = self.default_pair() if pair is None else pair
        pair = self._pairs([pair], "pair")[0]
        arguments.positive_int(num_points, "num_points", minimum=2)
        scored, _ = self._data(data, "data", stage)
        bn = data if bn_data is None else bn_data
        bn, _ = self._data(bn, "bn_data", stage, needs_labels=False)
        curve_model, kind = self.curves.get(pair), "curve"
        if curve_model is None:
            ends = [self.modes[i] for i in pair]
            curve_model = to_curve_model(*ends, curve=curves_lib.Bezier(1))
            kind = "line"
        return CurveProfile.measure(
            kind,
            pair,
            num_points,
            scored,
            lambda t: curve_training.curve_point(
                curve_model, t, self.backbone, bn
            ),
            verbose=1 if verbose == "auto" else verbose,
        )

    def evaluate(self, data, calibration_data=None, ood_data=None):
        """Scores every configuration of the ensemble; changes nothing.

        Like `keras.Model.evaluate`, it leaves the ensemble as it was: the
        ensemble's own `temperature` is set only by `calibrate`, so
        `predict` and `export` give the same results before and after.

        Each data set is read once, batch by batch: only the per-example
        outputs are kept, never the inputs, so data larger than memory
        can be scored.

        Rows: each mode; DE-1 .. DE-M; Single (the `anchor`) + k Type I
        bridges; DE-m + n Type II bridges; Single + k curve points at full
        cost; t-conditioned bridges. See `keras_bridge.evaluation`.

        Args:
            data: labelled test data.
            calibration_data: labelled validation data: the ``c*`` columns
                are temperature-scaled on it (each configuration with its
                own temperature, fitted here and not kept) and bridges that
                do not pay off on it are flagged.
            ood_data: inputs from another distribution (labels, if any,
                are ignored): adds OOD detection columns (AUROC and FPR at
                95 % TPR of predictive entropy and mutual information).

        Returns:
            A `keras_bridge.report.EnsembleReport`.

        Example:

        >>> report = ens.evaluate(data.test, calibration_data=data.validation)
        >>> report.row("DE-2")["members"], round(report.row("DE-2")["flops"])
        (2, 2)
        """
        stage = "evaluate"
        found = {"test": self._data(data, "data", stage)[0]}
        for argument, given, key, labels in (
            ("calibration_data", calibration_data, "calibration", True),
            ("ood_data", ood_data, "ood", False),
        ):
            if given is not None and not labels:
                given = _inputs_only(given)
            found[key] = (
                None
                if given is None
                else self._data(given, argument, stage, labels)[0]
            )
        members = self.members()
        self._check_finite("evaluate", training.BROKEN_MEMBER)
        teachers = {
            (m.pair, m.t): self.point_model(m.pair, m.t)
            for m in evaluation.fidelity_members(members)
        }
        return evaluation.evaluate(
            members,
            lambda chosen: self.inference_model(chosen, temperature=1.0),
            lambda chosen: member_flops(
                self.modes,
                self.feature_index,
                chosen,
                self.bridges,
                temperature=1.0,
                shared=self.shared,
            ),
            teachers,
            flops(self.backbone),
            found,
            self.anchor,
        )

    def select_members(self, data, max_members=None) -> list:
        """The members that pay off: greedy forward selection on the
        calibrated NLL of labelled (validation) ``data``.

        Starts from the best single member and adds the member that lowers
        the temperature-scaled NLL most, while one does (ensemble
        selection, `keras_bridge.metrics.select_members`). A bridge is a
        candidate only once the modes it reads are chosen: only then does
        it cost no more than its head. Use the result
        as ``members=`` of `predict`, `export` or `calibrate`.

        Args:
            data: labelled data, not the test data.
            max_members: stop at this many members; default no limit.

        Returns:
            Member names, in the order chosen.

        Example:

        >>> members = ens.select_members(data.validation)
        >>> outputs = ens.predict(x_test, members=members, verbose=0)
        >>> outputs["member_probabilities"].shape[1] == len(members)
        True
        """
        if max_members is not None:
            arguments.positive_int(max_members, "max_members")
        data, _ = self._data(data, "data", "select_members")
        model = self.inference_model(temperature=1.0)
        found = evaluation.predict_outputs(
            data,
            {
                "probs": evaluation.batch_predictor(
                    model, "member_probabilities"
                )
            },
        )
        probs, y = found["probs"], found["labels"]
        names = self.member_names()
        requires = [
            [names.index(source_member(i).name) for i in member.sources]
            if isinstance(member, BridgeMember)
            else []
            for member in self.members(names)
        ]
        chosen = metrics_lib.select_members(probs, y, max_members, requires)
        return [names[i] for i in chosen]


def _inputs_only(data):
    """``data``'s inputs: labels, if any, are dropped (OOD data)."""
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if isinstance(spec, tuple) and len(spec) == 2:
            return data.map(lambda x, y: x)
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return np.asarray(data[0])
    return data
