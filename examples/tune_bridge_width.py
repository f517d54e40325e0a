"""Tune the bridge head under a FLOPs budget, then train the others alike.

A bridge's fidelity is bought with head capacity, and its cost is capped
by a budget (``max_flops``, a fraction of one backbone pass). This script
searches the head of one bridge under that budget on the bundled digits
data, and shows both ways to do it:

1. The one-call path: ``ens.tune_bridge(..., max_flops=...)`` runs a
   KerasTuner search over the Type I bridge of the first curve (head
   family, width/slim, depth, learning rate, mixup), installs the best
   head, and returns a ``TuningResult``: the trials table, the Pareto
   front of FLOPs against validation KL, and ``fit_kwargs``. The script
   prints it, saves the Pareto plot, and trains the Type I bridges of the
   other curves with ``ens.fit_bridge(..., **result.fit_kwargs)``.
2. The full-control path: ``kb.tuning.BridgeHyperModel`` is a plain
   ``keras_tuner.HyperModel``; here it drives a
   ``keras_tuner.BayesianOptimization`` tuner of your own (with your own
   search callbacks) over the Type II bridge of the first curve, and
   ``hypermodel.install(...)`` makes the best head the ensemble's bridge.

Finally it prints the ensemble report with all the tuned bridges.

Run (from the repository root):

    python examples/tune_bridge_width.py            # the full run
    python examples/tune_bridge_width.py --smoke    # tiny: only checks it runs

Outputs, under ``--output`` (default ``runs/examples/tune_bridge_width``;
a folder that holds an earlier run is kept and ``<output>-2``, ``-3``,
... is used instead): ``pareto.png`` (the search of path 1),
``trials.json`` (its trials and front), ``tuner/`` (KerasTuner's trials of
both searches), ``ensemble.keras`` and ``report.md`` (not with
``--smoke``).
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402

import keras_bridge as kb  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Tune a bridge head under a FLOPs budget with KerasTuner on the "
            "bundled digits data."
        )
    )
    parser.add_argument(
        "--max-flops",
        type=float,
        default=0.12,
        help="the most one Type I head may cost, as a fraction of one "
        "backbone pass (a Type II head gets twice this)",
    )
    parser.add_argument(
        "--tuner",
        choices=("hyperband", "random", "bayesian"),
        default="hyperband",
        help="search algorithm of ens.tune_bridge",
    )
    parser.add_argument(
        "--max-trials",
        type=int,
        default=12,
        help="trials of the ens.tune_bridge search",
    )
    parser.add_argument(
        "--bayesian-trials",
        type=int,
        default=8,
        help="trials of the BayesianOptimization search (full control)",
    )
    parser.add_argument(
        "--trial-epochs",
        type=int,
        default=30,
        help="epochs of a trial (Hyperband: of its longest trials)",
    )
    parser.add_argument(
        "--num-modes", type=int, default=4, help="modes to train (>= 3)"
    )
    parser.add_argument(
        "--epochs", type=int, default=20, help="epochs per mode and curve"
    )
    parser.add_argument(
        "--bridge-epochs",
        type=int,
        default=60,
        help="most epochs of the bridges trained with the tuned settings",
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed")
    parser.add_argument(
        "--output",
        default=os.path.join("runs", "examples", "tune_bridge_width"),
        help="output folder; when it holds an earlier run, <output>-2, "
        "-3, ... is used instead",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny settings (3 untrained modes, 1-epoch curves, 2 + 1 "
        "one-epoch trials, no final report) that only check the script runs",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.num_modes, args.epochs, args.bridge_epochs = 3, 1, 1
        args.tuner, args.max_trials, args.trial_epochs = "random", 2, 1
        args.bayesian_trials = 1
    if args.num_modes < 3:
        parser.error(
            "--num-modes must be at least 3: one curve is tuned, the others "
            "are trained with its settings"
        )
    return args


def train_ensemble(args, data, verbose) -> kb.BridgeEnsemble:
    """Modes, and curves from the anchor mode to each other mode."""
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=args.num_modes, seed=args.seed)
    if args.smoke:  # untrained modes: the search, not the modes, is the point
        copies = [keras.models.clone_model(backbone) for _ in range(3)]
        ens.set_modes(copies)
    else:
        ens.fit_modes(
            data.train,
            epochs=args.epochs,
            validation_data=data.validation,
            verbose=verbose,
        )
    ens.fit_curves(data.train, validation_data=data.validation, verbose=verbose)
    return ens


def tune_with_one_call(args, ens, data, pair, output, verbose):
    """Path 1: `tune_bridge` searches and installs the Type I bridge of
    ``pair``; returns its `TuningResult`."""
    result = ens.tune_bridge(
        data.train,
        data.validation,
        kind="type1",
        pair=pair,
        tuner=args.tuner,
        max_trials=args.max_trials,
        epochs=args.trial_epochs,
        max_flops=args.max_flops,
        directory=os.path.join(output, "tuner"),
        verbose=verbose,
    )
    print(result)  # the trials table; '*' marks the installed head
    print("Pareto front (FLOPs vs validation KL):")
    for trial in result.pareto:
        print(
            f"  trial {trial['trial_id']}: {trial['flops']:.3f}x FLOPs, "
            f"val KL {trial['val_kl']:.4f}, {trial['hyperparameters']}"
        )
    print(f"Settings for the other bridges: {result.fit_kwargs}")
    result.plot(path=os.path.join(output, "pareto.png"))
    with open(os.path.join(output, "trials.json"), "w") as handle:
        json.dump(
            {
                "member": result.member,
                "trials": result.trials,
                "pareto": [t["trial_id"] for t in result.pareto],
                "best": result.best["trial_id"],
                "fit_kwargs": result.fit_kwargs,
            },
            handle,
            indent=2,
        )
    return result


def tune_with_full_control(args, ens, data, pair, output, verbose):
    """Path 2: your own KerasTuner tuner on `kb.tuning.BridgeHyperModel`,
    here over the Type II bridge of ``pair``."""
    hypermodel = kb.tuning.BridgeHyperModel(
        ens, data.train, kind="type2", pair=pair, max_flops=2 * args.max_flops
    )
    tuner = keras_tuner.BayesianOptimization(
        hypermodel,
        objective=keras_tuner.Objective("val_kl", "min"),
        max_trials=args.bayesian_trials,
        num_initial_points=min(3, args.bayesian_trials),
        seed=args.seed,
        directory=os.path.join(output, "tuner"),
        project_name="bayesian_type2",
    )
    tuner.search(
        data.train,
        validation_data=data.validation,
        epochs=args.trial_epochs,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_kl", mode="min", patience=5
            )
        ],
        verbose=verbose,
    )
    best = tuner.get_best_hyperparameters(1)[0]
    model = tuner.get_best_models(1)[0]  # a BridgeDistiller, rebuilt
    print(
        f"BayesianOptimization: best {hypermodel.member.name} head "
        f"{best.values} at {model.head_cost:.3f}x FLOPs"
    )
    hypermodel.install(model)


def main(argv=None) -> None:
    args = parse_args(argv)
    output = kb.atomic_files.run_folder(args.output)
    print(f"Writing to {output}")
    verbose = 0 if args.smoke else 1
    data = kb.data.load_digits(seed=args.seed)
    ens = train_ensemble(args, data, 0 if args.smoke else 2)
    tuned, *others = sorted(ens.curves)

    result = tune_with_one_call(args, ens, data, tuned, output, verbose)
    ens.fit_bridge(  # the other curves' Type I bridges, tuned alike
        data.train,
        kind="type1",
        pairs=others,
        epochs=args.bridge_epochs,
        validation_data=data.validation,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_kl",
                mode="min",
                patience=10,
                restore_best_weights=True,
            )
        ],
        verbose=0 if args.smoke else 2,
        **result.fit_kwargs,
    )
    tune_with_full_control(args, ens, data, tuned, output, verbose)

    print(f"Members: {ens.member_names()}")
    ens.save(os.path.join(output, "ensemble.keras"))
    if args.smoke:  # the report is examples/custom_backbone.py's subject
        print(f"Smoke run: no report. Saved the rest in {output}")
        return
    report = ens.evaluate(data.test, calibration_data=data.validation)
    print(report)
    with open(os.path.join(output, "report.md"), "w") as handle:
        handle.write(report.to_markdown() + "\n")
    print(f"Saved pareto.png, trials.json, report.md, ... in {output}")


if __name__ == "__main__":
    main()
