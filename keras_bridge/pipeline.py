"""The whole method from a `RunConfig`: what ``keras-bridge run`` does.

Stages: data -> modes -> the straight line's profile -> curves and their
profiles -> (tuning) -> Type I and Type II bridges -> report -> plots ->
``ensemble.keras`` -> exports. Everything goes to one run folder that
`run` is given (new or empty): ``config.yaml`` (as used, first),
``report.md``, ``report.json``, ``*.png``, ``ensemble.keras``,
``serving/<dataset>/1`` and ``model.onnx``.
"""

import json
import os
import time

import keras

from keras_bridge import config as config_lib
from keras_bridge import data as data_lib
from keras_bridge import models


def load_data(data: config_lib.DataConfig, seed: int) -> data_lib.DataSplits:
    """The `DataSplits` a config names; nothing is downloaded."""
    if data.name == "digits":
        return data_lib.load_digits(batch_size=data.batch_size, seed=seed)
    if data.name == "fashion_mnist":
        return data_lib.load_fashion_mnist(
            path=data.data_dir,
            batch_size=data.batch_size,
            validation_size=data.validation_size,
            seed=seed,
        )
    return data_lib.load_tfds(
        data.name, batch_size=data.batch_size, data_dir=data.data_dir,
        seed=seed,
    )  # fmt: skip


def build_backbone(backbone: config_lib.BackboneConfig, data) -> keras.Model:
    """The backbone a config names, for ``data``'s shapes."""
    if backbone.family == "plain_cnn":
        return models.plain_cnn(
            data.input_shape, data.num_classes, width=backbone.width
        )
    return models.resnet(
        data.input_shape,
        data.num_classes,
        depth=backbone.depth,
        width=backbone.width,
    )


class _Log:
    """Stage headings and their wall times."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.seconds = {}
        self._stage, self._started = None, None

    def stage(self, name: str, what: str) -> None:
        self.end()
        self._stage, self._started = name, time.perf_counter()
        self.say(f"== {what}")

    def end(self) -> None:
        if self._stage is not None:
            self.seconds[self._stage] = time.perf_counter() - self._started
            self._stage = None

    def say(self, text) -> None:
        if self.verbose:
            print(text, flush=True)


def _bridges(ens, data, config, log, report) -> None:
    """Tuning (if on), Type I bridges on every curve, a Type II bridge."""
    bridges, tuning = config.bridges, config.tuning
    stop = (
        [
            keras.callbacks.EarlyStopping(
                monitor="val_kl", mode="min", patience=bridges.patience,
                restore_best_weights=True,
            )
        ]
        if bridges.patience
        else []
    )  # fmt: skip
    options = {
        "head": None,
        "learning_rate": bridges.learning_rate,
        "mixup_alpha": bridges.mixup_alpha,
        "max_flops": bridges.max_flops,
    }
    pairs = sorted(ens.curves)
    if tuning.enabled:
        log.stage("tuning", f"Tuning the Type I head ({tuning.tuner})")
        result = ens.tune_bridge(
            data.train, data.validation, tuner=tuning.tuner,
            max_trials=tuning.max_trials, epochs=tuning.epochs,
            max_flops=tuning.max_flops,
            directory=os.path.join(report["folder"], "tuning"),
            verbose=log.verbose,
        )  # fmt: skip
        log.say(result)
        report["tuning"] = {
            "trials": result.trials,
            "pareto": result.pareto,
            "best": result.best,
            "fit_kwargs": result.fit_kwargs,
            "seconds": result.seconds,
        }
        report["_tuning_result"] = result
        options = result.fit_kwargs
        tuned = ens.members()[-1].pair
        pairs = [p for p in pairs if p != tuned]
    log.stage("bridges", "Bridges")
    common = {
        "epochs": bridges.epochs,
        "validation_data": data.validation,
        "verbose": log.verbose,
        **options,
    }
    if pairs:
        ens.fit_bridge(
            data.train, kind="type1", pairs=pairs, callbacks=stop, **common
        )
    if bridges.type2:
        ens.fit_bridge(
            data.train, kind="type2", pairs=[sorted(ens.curves)[0]],
            callbacks=stop,
            **{**common, "head": None, "max_flops": bridges.max_flops},
        )  # fmt: skip


def _curves(ens, data, curves, log, report) -> None:
    log.stage("curves", "Curves between the modes")
    line = ens.curve_profile(data.test, bn_data=data.train, verbose=log.verbose)
    log.say("Straight line from the anchor (before curve training):")
    log.say(line)
    report["line"] = line.to_dict()
    report["_profiles"] = [line]
    ens.fit_curves(
        data.train,
        epochs=curves.epochs,
        learning_rate=curves.learning_rate,
        validation_data=data.validation,
        verbose=log.verbose,
    )
    report["curves"] = []
    for pair in sorted(ens.curves):
        profile = ens.curve_profile(
            data.test, pair=pair, bn_data=data.train, verbose=log.verbose
        )
        log.say(profile)
        report["curves"].append(profile.to_dict())
        report["_profiles"].append(profile)


def train(config: config_lib.RunConfig, folder: str, verbose=1):
    """Runs every training stage of ``config``: ``(ensemble, data, report)``
    with the report's dict so far and the stage timings in ``log``."""
    log = _Log(verbose)
    report = {"folder": folder, "config": config.model_dump()}
    log.stage("data", f"Data: {config.data.name}")
    data = load_data(config.data, config.seed)
    backbone = build_backbone(config.backbone, data)
    from keras_bridge.ensemble import BridgeEnsemble

    ens = BridgeEnsemble(
        backbone, num_modes=config.modes.num_modes, seed=config.seed
    )
    log.stage("modes", f"Training {config.modes.num_modes} modes")
    ens.fit_modes(
        data.train,
        epochs=config.modes.epochs,
        learning_rate=config.modes.learning_rate,
        validation_data=data.validation,
        verbose=log.verbose,
    )
    log.say(f"Anchor (best on validation data): mode {ens.anchor}")
    _curves(ens, data, config.curves, log, report)
    _bridges(ens, data, config, log, report)
    log.end()
    return ens, data, report, log


def evaluate(ens, data, folder, plots=True, profiles=(), verbose=1) -> dict:
    """Scores ``ens`` on ``data.test`` (calibrated on ``data.validation``)
    and writes ``report.md``, ``report.json``'s evaluation part and the
    plots to ``folder``; returns the report's dict."""
    report = ens.evaluate(data.test, calibration_data=data.validation)
    selected = ens.select_members(data.validation)
    if verbose:
        print(report, flush=True)
        print(f"Members that pay off on validation data: {selected}")
    lines = [report.to_markdown(), ""]
    for bridge in report.flagged:
        lines.append(f"- {bridge['name']}: {bridge['flag']}")
    lines.append(f"\nMembers selected on validation data: {selected}\n")
    with open(os.path.join(folder, "report.md"), "w") as handle:
        handle.write("\n".join(lines))
    if plots:
        _plots(report, profiles, folder, verbose)
    return {"evaluation": report.to_dict(), "selected_members": selected}


def _plots(report, profiles, folder, verbose) -> None:
    try:
        report.plot(kind="flops", path=os.path.join(folder, "flops.png"))
        report.plot(
            kind="reliability", path=os.path.join(folder, "reliability.png")
        )
        if profiles:
            profiles[0].plot(
                path=os.path.join(folder, "curves.png"), others=profiles[1:]
            )
    except ImportError as error:
        if verbose:
            print(f"Plots skipped: {error}")


def export(ens, config, folder, verbose=1) -> dict:
    """Saves ``ensemble.keras`` and the exports ``config`` asks for."""
    paths = {"ensemble": ens.save(os.path.join(folder, "ensemble.keras"))}
    name = config.data.name.replace("/", "_")
    if config.export.saved_model:
        paths["saved_model"] = ens.export(
            os.path.join(folder, "serving", name, "1"), verbose=verbose
        )
    if config.export.onnx:
        try:
            paths["onnx"] = ens.export(
                os.path.join(folder, "model.onnx"), format="onnx",
                verbose=verbose,
            )  # fmt: skip
        except ImportError as error:
            print(f"ONNX export skipped: {error}")
    return paths


def run(config: config_lib.RunConfig, folder: str, verbose=1) -> dict:
    """The whole pipeline into the (new or empty) run ``folder``.

    Args:
        config: a validated `keras_bridge.config.RunConfig`.
        folder: the run folder; ``config.yaml`` is written first.
        verbose: 0 (quiet), 1 (progress bars) or 2 (a line per epoch, for
            logs).

    Returns:
        The dict written to ``report.json``.
    """
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        handle.write(config_lib.dump(config))
    ens, data, report, log = train(config, folder, verbose)
    profiles = report.pop("_profiles")
    result = report.pop("_tuning_result", None)
    log.stage("report", "Report")
    report.update(evaluate(ens, data, folder, config.plots, profiles, verbose))
    if result is not None and config.plots:
        try:
            result.plot(path=os.path.join(folder, "pareto.png"))
        except ImportError:
            pass
    log.stage("export", "Saving and exporting")
    report["paths"] = export(ens, config, folder, verbose)
    log.end()
    report["seconds"] = log.seconds
    path = os.path.join(folder, "report.json")
    with open(path, "w") as handle:
        json.dump(report, handle, indent=2, default=_jsonable)
    log.say(f"Report written to {path} and report.md")
    return report


def _jsonable(value):
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)
