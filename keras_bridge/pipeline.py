"""The whole method from a `RunConfig`: what ``keras-bridge run`` does.

Stages: data -> modes -> the straight line's profile -> curves and their
profiles -> (tuning) -> Type I and Type II bridges -> report -> plots ->
``ensemble.keras`` -> exports. Everything goes to one run folder that
`run` is given (new or empty): ``config.yaml`` (as used, first),
``report.md``, ``report.json``, ``*.png``, ``ensemble.keras``,
``serving/<dataset>/1`` and ``model.onnx``.
"""

import dataclasses
import functools
import json
import os
import time

import keras

from keras_bridge import cluster as cluster_lib
from keras_bridge import config as config_lib
from keras_bridge import data as data_lib
from keras_bridge import mode_training, models, plots
from keras_bridge import report as report_lib
from keras_bridge.atomic_files import atomic_write
from keras_bridge.checkpoints import RunState, jsonable
from keras_bridge.curve_profile import CurveProfile
from keras_bridge.ensemble import BridgeEnsemble
from keras_bridge.messages import print_msg


def load_data(
    data: config_lib.DataConfig, seed: int, argument="config key `data.name`"
) -> data_lib.DataSplits:
    """The `DataSplits` a config names; nothing is downloaded. An unknown
    dataset name is a ValueError naming ``argument``."""
    if data.name == "digits":
        return data_lib.load_digits(batch_size=data.batch_size, seed=seed)
    if data.name == "fashion_mnist":
        return data_lib.load_fashion_mnist(
            path=data.data_dir,
            batch_size=data.batch_size,
            validation_size=data.validation_size,
            seed=seed,
        )
    from tensorflow_datasets.core.registered import DatasetNotFoundError

    try:
        return data_lib.load_tfds(
            data.name, batch_size=data.batch_size, data_dir=data.data_dir,
            seed=seed,
        )  # fmt: skip
    except DatasetNotFoundError:
        raise ValueError(
            f"{argument}: unknown dataset {data.name!r}; use 'digits' "
            "(bundled), 'fashion_mnist' or the name of a TensorFlow "
            "Datasets dataset prepared in `data_dir`."
        ) from None


def build_backbone(backbone: config_lib.BackboneConfig, data) -> keras.Model:
    """The backbone a config names, for ``data``'s shapes."""
    if backbone.family in ("plain_cnn", "mobilenet_v3_style"):
        return getattr(models, backbone.family)(
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
            print_msg(text)


def _stop(bridges) -> list:
    if not bridges.patience:
        return []
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_kl", mode="min", patience=bridges.patience,
            restore_best_weights=True,
        )
    ]  # fmt: skip


def _training_call(method, section, verbose, backup):
    """The ``(method, keyword arguments)`` of a modes or curves stage."""
    return method, {
        "epochs": section.epochs,
        "learning_rate": section.learning_rate,
        "verbose": verbose,
        "backup_dir": backup,
    }


def _modes_call(ens, config, verbose, backup, records):
    return _training_call("fit_modes", config.modes, verbose, backup)


def _modes(ens, data, config, log, backup, records, fit):
    log.stage("modes", f"Training {config.modes.num_modes} modes")
    fit("modes")
    mode_training.stop_on_broken_modes(ens.mode_checks)
    line = ens.curve_profile(
        data.test, bn_data=data.train, verbose=log.verbose,
        num_points=config.curves.num_points,
    )  # fmt: skip
    log.say("Straight line from the anchor (before curve training):")
    log.say(line)
    return {"line": line.to_dict()}


def _curves_call(ens, config, verbose, backup, records):
    return _training_call("fit_curves", config.curves, verbose, backup)


def _curves(ens, data, config, log, backup, records, fit):
    log.stage("curves", "Curves between the modes")
    fit("curves")
    profiles = []
    for pair in sorted(ens.curves):
        profile = ens.curve_profile(
            data.test, pair=pair, bn_data=data.train, verbose=log.verbose,
            num_points=config.curves.num_points,
        )  # fmt: skip
        log.say(profile)
        profiles.append(profile.to_dict())
    return {"curves": profiles}


def _tuning(ens, data, config, log, backup, records, fit):
    tuning = config.tuning
    if not tuning.enabled:
        return None
    log.stage("tuning", f"Tuning the Type I head ({tuning.tuner})")
    result = ens.tune_bridge(
        data.train, data.validation, tuner=tuning.tuner,
        max_trials=tuning.max_trials, epochs=tuning.epochs,
        max_flops=tuning.max_flops, trunk=config.bridges.trunk,
        directory=backup,  # KerasTuner resumes its own search there
        verbose=log.verbose,
    )  # fmt: skip
    if result is None:  # a worker of the distributed search
        return None
    log.say(result)
    return {"tuning": dataclasses.asdict(result)}


def _bridges_call(bridges, kind, pairs, options, verbose, backup):
    return "fit_bridge", {
        "kind": kind,
        "pairs": pairs,
        "epochs": bridges.epochs,
        "callbacks": _stop(bridges),
        "verbose": verbose,
        "backup_dir": backup,
        **options,
    }


def _type1_call(ens, config, verbose, backup, records):
    options = {
        "trunk": config.bridges.trunk,
        **_bridge_options(config.bridges),
    }
    pairs = sorted(ens.curves)
    tuned = (records.get("tuning") or {}).get("tuning")
    if tuned:  # the tuned bridge stays; the others train like it
        options = {
            **_tuned_options(tuned["fit_kwargs"]),
            "trunk": config.bridges.trunk,
        }
        if config.bridges.trunk == "frozen":
            pairs = [p for p in pairs if list(p) != list(tuned["pair"])]
    if not pairs:
        return None
    return _bridges_call(
        config.bridges, "type1", pairs, options, verbose, backup
    )


def _type1(ens, data, config, log, backup, records, fit):
    log.stage("type1", "Type I bridges")
    fit("type1")
    return {}


def _type2_call(ens, config, verbose, backup, records):
    if not config.bridges.type2:
        return None
    return _bridges_call(
        config.bridges, "type2", [ens.default_pair()],
        _bridge_options(config.bridges), verbose, backup,
    )  # fmt: skip


def _type2(ens, data, config, log, backup, records, fit):
    if not config.bridges.type2:
        return None
    log.stage("type2", "A Type II bridge")
    fit("type2")
    return {}


def _bridge_options(bridges) -> dict:
    """The config's ``bridges`` settings as `fit_bridge` arguments: the
    head's budget ``max_flops`` goes in its ``head`` spec."""
    return {
        "learning_rate": bridges.learning_rate,
        "mixup_alpha": bridges.mixup_alpha,
        "head": {"max_flops": bridges.max_flops},
    }


def _tuned_options(fit_kwargs) -> dict:
    """A tuning record's ``fit_kwargs`` as `fit_bridge` arguments; a
    record written before 0.4 holds ``max_flops`` beside ``head``."""
    options = dict(fit_kwargs)
    if "max_flops" in options:
        budget = options.pop("max_flops")
        options["head"] = {**(options.get("head") or {}), "max_flops": budget}
    return options


#: The training stages of a run, in order; each is checkpointed.
STAGES = {
    "modes": _modes,
    "curves": _curves,
    "tuning": _tuning,
    "type1": _type1,
    "type2": _type2,
}
#: The training call of each stage that has independent units
#: (`keras_bridge.cluster`): ``(method, keyword arguments)`` or None.
CALLS = {
    "modes": _modes_call,
    "curves": _curves_call,
    "type1": _type1_call,
    "type2": _type2_call,
}
#: Later stages whose units train with a stage's (they read the same
#: ensemble).
WAVES = {"type1": ("type2",)}


def _tuning_worker(config) -> str | None:
    """The ``KERASTUNER_TUNER_ID`` of a worker of KerasTuner's distributed
    search, when ``config`` tunes; else None."""
    if not config.tuning.enabled:
        return None
    # KerasTuner loads only for a run that tunes.
    from keras_bridge import tuning

    if tuning.distributed_role() != "worker":
        return None
    return os.environ["KERASTUNER_TUNER_ID"]


def _wait_for_curves(state, log, poll_seconds=1.0) -> None:
    """Waits until the chief's run has trained its curves: a worker of
    the distributed search tunes the bridge of the saved curves."""
    said = False
    while "curves" not in state.finished():
        if not said:
            log.say(
                "A worker of the distributed search: waiting for the "
                "chief's run to train its curves"
            )
            said = True
        time.sleep(poll_seconds)
    if "tuning" in state.finished():
        raise ValueError(
            f"The run in {state.run_dir!r} has finished its tuning: a "
            "worker has no trials left to train."
        )


def split(data: config_lib.DataConfig, seed: int, name: str):
    """One split (``"train"``, ``"validation"``) of `load_data`: what each
    unit of a run loads."""
    return getattr(load_data(data, seed), name)


def train(
    config: config_lib.RunConfig, folder: str, verbose=1, data=None,
    cluster=None,
):  # fmt: skip
    """Runs (or resumes) every training stage of ``config`` in ``folder``.

    The ensemble is saved in ``folder/checkpoints`` after every stage and
    every epoch is backed up (`keras_bridge.checkpoints.RunState`): called
    again on the same folder after a kill, it resumes where it stopped.
    Each mode, each curve and the bridges of each stage are units that
    load their own data (`split`) and train on their own
    (`keras_bridge.cluster.Units`), here or, with ``cluster``, as Ray
    tasks: both give the same ensemble. ``data``: `load_data` of
    ``config.data``, when already loaded.

    Returns:
        ``(ensemble, data, report, log)``: the report's dict so far and
        the stage timings in ``log.seconds``.
    """
    log = _Log(verbose)
    log.stage("data", f"Data: {config.data.name}")
    if data is None:
        data = load_data(config.data, config.seed)
    backbone = build_backbone(config.backbone, data)
    ens = BridgeEnsemble(
        backbone, num_modes=config.modes.num_modes, seed=config.seed
    )
    state = RunState(os.path.join(folder, "checkpoints"))
    worker = _tuning_worker(config)
    if worker:
        _wait_for_curves(state, log)
    finished, saved = state.resume(BridgeEnsemble.load)
    if finished:
        ens = saved  # the run's own config.yaml built both
        log.say(f"Resuming {folder} after: {', '.join(finished)}")
    records = state.records()
    units = cluster_lib.Units(
        cluster,
        functools.partial(split, config.data, config.seed, "train"),
        functools.partial(split, config.data, config.seed, "validation"),
        config.seed,
        bool(verbose),
    )

    def fit(stage):
        """The stage's training call, its units trained first."""
        units.train_stages(
            ens, state.run_dir, [stage, *WAVES.get(stage, ())],
            lambda name: CALLS[name](
                ens, config, log.verbose, state.backup_dir(name), records
            ),
        )  # fmt: skip
        call = CALLS[stage](
            ens, config, log.verbose, state.backup_dir(stage), records
        )
        if call is not None:
            method, kwargs = call
            getattr(ens, method)(
                data.train, validation_data=data.validation, **kwargs
            )

    for stage, run_stage in STAGES.items():
        if stage in finished:
            continue
        backup = state.backup_dir(stage)
        if worker:  # it trains the chief's trials, and nothing else
            _tuning(ens, data, config, log, backup, records, fit)
            log.end()
            return ens, data, {"tuning_worker": worker}, log
        records[stage] = run_stage(ens, data, config, log, backup, records, fit)
        state.complete(stage, ens, records[stage])
    log.end()
    report = {"folder": folder, "config": config.model_dump()}
    for record in records.values():
        report.update(record or {})
    report["units"] = units.timings
    return ens, data, report, log


def evaluate(ens, data, folder, plots=True, profiles=(), verbose=1) -> dict:
    """Scores ``ens`` on ``data.test`` (the ``c*`` columns calibrated on
    ``data.validation``; ``ens`` is left unchanged) and writes
    ``report.md``, ``report.json``'s evaluation part and the plots to
    ``folder``; returns the report's dict."""
    report = ens.evaluate(data.test, calibration_data=data.validation)
    selected = ens.select_members(data.validation)
    if verbose:
        print_msg(report)
        print_msg(f"Members that pay off on validation data: {selected}")
    with open(os.path.join(folder, "report.md"), "w") as handle:
        handle.write(report_lib.markdown(report, selected, ens.anchor))
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
                path=os.path.join(folder, "curves.png"),
                others=profiles[1:],
                scored_on="test set",
            )
    except ImportError as error:
        if verbose:
            print_msg(f"Plots skipped: {error}")


def export(ens, config, folder, verbose=1) -> dict:
    """Saves ``ensemble.keras`` and the exports ``config`` asks for."""
    paths = {"ensemble": ens.save(os.path.join(folder, "ensemble.keras"))}
    name = config.data.name.replace("/", "_")
    if config.export.saved_model:
        paths["saved_model"] = ens.export(
            os.path.join(folder, "serving", name, "1"),
            verbose=bool(verbose),
        )
    if config.export.onnx:
        try:
            paths["onnx"] = ens.export(
                os.path.join(folder, "model.onnx"), format="onnx",
                verbose=bool(verbose),
            )  # fmt: skip
        except ImportError as error:
            print_msg(f"ONNX export skipped: {error}")
    return paths


def run(
    config: config_lib.RunConfig, folder: str, verbose=1, data=None,
    cluster=None,
) -> dict:  # fmt: skip
    """The whole pipeline into the (new or empty) run ``folder``.

    Args:
        config: a validated `keras_bridge.config.RunConfig`.
        folder: the run folder; ``config.yaml`` is written first.
        verbose: 0 (quiet), 1 (progress bars) or 2 (a line per epoch, for
            logs).
        data: `load_data` of ``config.data``, when already loaded (the
            command line loads it before it creates the run folder).
        cluster: where the units train (see `train`): None for this
            process, or a Ray address or `keras_bridge.cluster.RayCluster`.

    Returns:
        The dict written to ``report.json``.
    """
    path = os.path.join(folder, "config.yaml")
    if not os.path.exists(path):  # a resumed run keeps its own
        with open(path, "w") as handle:
            handle.write(config_lib.dump(config))
    ens, data, report, log = train(config, folder, verbose, data, cluster)
    if "tuning_worker" in report:
        log.say("The search is over: the chief finishes the run.")
        return report
    profiles = [
        CurveProfile(**{**p, "pair": tuple(p["pair"])})
        for p in [report["line"], *report["curves"]]
    ]
    # `evaluate` changes nothing: the saved and exported ensemble gets its
    # temperature here.
    log.stage("calibration", "Calibration on the validation split")
    report["temperature"] = ens.calibrate(data.validation)
    log.stage("report", "Report")
    report.update(evaluate(ens, data, folder, config.plots, profiles, verbose))
    if "tuning" in report and config.plots:
        try:
            plots.pareto(
                report["tuning"]["trials"], report["tuning"]["pareto"],
                path=os.path.join(folder, "pareto.png"),
            )  # fmt: skip
        except ImportError:
            pass
    log.stage("export", "Saving and exporting")
    report["paths"] = export(ens, config, folder, verbose)
    log.end()
    report["seconds"] = log.seconds
    # Written last and atomically: its presence means the run finished
    # (`keras-bridge run --resume` then leaves the folder alone).
    path = os.path.join(folder, "report.json")
    with atomic_write(path, overwrite=True, suffix=".json") as staging:
        with open(staging, "w") as handle:
            json.dump(report, handle, indent=2, default=jsonable)
    log.say(f"Report written to {path} and report.md")
    return report
