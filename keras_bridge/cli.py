"""The ``keras-bridge`` command.

This module imports no TensorFlow, Keras or pydantic at the top: ``--help``
and ``--version`` answer at once, and each subcommand imports what it
needs (see ``keras_bridge/__init__.py``).
"""

import argparse
import json
import logging
import os
import sys

from keras_bridge import atomic_files
from keras_bridge.version import __version__

#: `keras_bridge.export.FORMATS`, here so that ``--help`` needs no Keras.
EXPORT_FORMATS = ("tf_saved_model", "onnx", "litert")

#: How library messages spell an argument, and the command's flag for it.
FLAGS = {"export": {"`overwrite=True`": "`--overwrite`"}}


class _Parser(argparse.ArgumentParser):
    """Reports a bad argument in one line, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}; received {text!r}"
            )
        return value

    return parse


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="keras-bridge",
        description=(
            "Cheap deep ensembles for Keras: train modes, fit curves "
            "between them, distil bridges, report, export."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-bridge {__version__}"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    quiet = _Parser(add_help=False)
    quiet.add_argument("--quiet", action="store_true", help="print errors only")
    commands.add_parser(
        "demo",
        parents=[quiet],
        help="the whole pipeline on the bundled digits in ~3 minutes",
        description=(
            "Runs the whole pipeline on the bundled digits with a quick "
            "preset (3 modes) and prints the report; writes runs/demo "
            "(or runs/demo-2, ...)."
        ),
    )
    for name, what in (
        ("run", "train, evaluate and export an ensemble from a config"),
        ("tune", "as run, with the Type I head tuned by KerasTuner first"),
    ):
        command = commands.add_parser(
            name,
            parents=[quiet],
            help=what,
            description=(
                f"{what[0].upper()}{what[1:]}. Without CONFIG, the defaults"
                " (bundled digits); see --print-config. Writes a new run "
                "folder: config.yaml, report.md, report.json, plots, "
                "ensemble.keras and the exports."
            ),
        )
        command.add_argument(
            "config", nargs="?", help="YAML config (keys: --print-config)"
        )
        command.add_argument(
            "--output", help="run folder; overrides the config's `output`"
        )
        command.add_argument(
            "--resume",
            metavar="RUN_FOLDER",
            help="finish a killed run in its folder, with its config.yaml",
        )
        command.add_argument(
            "--print-config",
            action="store_true",
            help="print the config that would run (defaults filled) and exit",
        )
        command.add_argument(
            "--ray",
            metavar="ADDRESS",
            help=(
                "train the independent units (modes, curves, bridges) as "
                "Ray tasks on this cluster: 'auto' after `ray start`, "
                "HOST:6379, or 'local'; the run folder must be shared"
            ),
        )
    evaluate = commands.add_parser(
        "evaluate",
        parents=[quiet],
        help="report of a saved ensemble on a dataset",
        description=(
            "Scores a saved ensemble on the test split of a dataset, "
            "calibrated on its validation split, and writes report.md, "
            "report.json and plots to a new run folder."
        ),
    )
    evaluate.add_argument("ensemble", help="an ensemble.keras file")
    _data_arguments(evaluate)
    evaluate.add_argument(
        "--output",
        default=None,
        help="run folder (default runs/<dataset>-eval)",
    )
    export = commands.add_parser(
        "export",
        parents=[quiet],
        help="export a saved ensemble for serving",
        description=(
            "Exports a saved ensemble as one multi-output model: a TF "
            "Serving SavedModel version folder, an .onnx or a .tflite "
            "(LiteRT) file. An existing PATH is replaced only with "
            "--overwrite."
        ),
    )
    export.add_argument("ensemble", help="an ensemble.keras file")
    export.add_argument(
        "path", help="SavedModel version folder (e.g. serving/m/1) or file"
    )
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="tf_saved_model",
        help="export format (default tf_saved_model)",
    )
    export.add_argument(
        "--quantization",
        choices=("dynamic_range", "float16"),
        default=None,
        help="litert only: quantise the weights",
    )
    export.add_argument(
        "--members",
        default=None,
        help="comma-separated member names to serve (default all)",
    )
    export.add_argument(
        "--opset-version",
        type=int,
        default=None,
        help="onnx only: the ONNX opset (default: tf2onnx's)",
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing PATH that an export wrote",
    )
    return parser


def _data_arguments(parser) -> None:
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (bundled), fashion_mnist, or a prepared TFDS name",
    )
    parser.add_argument(
        "--data-dir", default=None, help="fashion_mnist / TFDS data folder"
    )
    parser.add_argument(
        "--batch-size", type=_count(1), default=64, help="batch size"
    )


def run_folder(output: str) -> str:
    """`atomic_files.run_folder`, with errors naming ``--output``."""
    return atomic_files.run_folder(output, argument="--output")


def _verbosity(args) -> int:
    """0 with --quiet; progress bars on a terminal; else a line per epoch
    (no escape codes in log files)."""
    if getattr(args, "quiet", False):
        return 0
    return 1 if sys.stdout.isatty() else 2


def _config(args):
    from keras_bridge import config as config_lib

    if args.command == "demo":
        config = config_lib.parse(config_lib.DEMO)
    elif args.config is None:
        config = config_lib.parse({})
    else:
        config = config_lib.load(args.config)
    changes = {}
    if getattr(args, "output", None):
        changes["output"] = args.output
    if args.command == "tune":
        changes["tuning"] = config.tuning.model_copy(update={"enabled": True})
    return config.model_copy(update=changes)


def run(args) -> dict:
    """``demo``, ``run`` and ``tune``: the pipeline into a new run folder."""
    from keras_bridge import config as config_lib

    resume = getattr(args, "resume", None)
    if resume:
        if getattr(args, "config", None) or getattr(args, "output", None):
            raise ValueError(
                "`--resume` takes the run's own config.yaml and folder: "
                "give neither CONFIG nor --output."
            )
        args.config = os.path.join(resume, "config.yaml")
        if not os.path.isfile(args.config):
            raise ValueError(
                f"`--resume` {resume!r} is not a run folder (it has no "
                "config.yaml)."
            )
        if os.path.isfile(os.path.join(resume, "report.json")):
            return _finished(resume, args)
    config = _config(args)
    if getattr(args, "print_config", False):
        print(config_lib.dump(config), end="")
        return {}
    _load_library()
    from keras_bridge import pipeline

    data = None
    if not resume:
        # Loaded before the run folder exists: a dataset that cannot be
        # loaded leaves no folder behind.
        data = pipeline.load_data(config.data, config.seed)
    folder = resume or run_folder(config.output_folder)
    verbose = _verbosity(args)
    if verbose:
        print(f"Writing this run to {folder}")
    cluster = getattr(args, "ray", None)
    try:
        return pipeline.run(config, folder, verbose, data=data, cluster=cluster)
    except BaseException:
        if not resume:
            _remove_if_unused(folder)
        raise


def _remove_if_unused(folder: str) -> None:
    """Removes a new run folder that holds only its ``config.yaml`` (the
    run failed before its first stage wrote anything)."""
    if os.listdir(folder) == ["config.yaml"]:
        os.remove(os.path.join(folder, "config.yaml"))
        os.rmdir(folder)


def _finished(folder: str, args) -> dict:
    """`--resume` of a run that finished (its report.json, written last,
    is there): nothing is run or rewritten."""
    if _verbosity(args):
        print(
            f"{folder} is a finished run (it has report.json): nothing to "
            "resume, and it is left as it is. To run its config again, in "
            f"a new folder: keras-bridge run {args.config}"
        )
    try:
        with open(os.path.join(folder, "report.json")) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def evaluate(args) -> dict:
    """``evaluate``: a saved ensemble's report into a new run folder."""
    from keras_bridge import config as config_lib
    from keras_bridge import pipeline
    from keras_bridge.checkpoints import jsonable
    from keras_bridge.ensemble import BridgeEnsemble

    _load_library()
    data_config = config_lib.DataConfig(
        name=args.dataset, data_dir=args.data_dir, batch_size=args.batch_size
    )
    ens = BridgeEnsemble.load(_existing(args.ensemble, "ENSEMBLE"))
    data = pipeline.load_data(data_config, seed=0, argument="`--dataset`")
    name = args.dataset.replace("/", "_")
    folder = run_folder(args.output or f"runs/{name}-eval")
    verbose = _verbosity(args)
    if verbose:
        print(f"Writing this evaluation to {folder}")
    report = pipeline.evaluate(ens, data, folder, verbose=verbose)
    report["ensemble"] = os.path.abspath(args.ensemble)
    with open(os.path.join(folder, "report.json"), "w") as handle:
        json.dump(report, handle, indent=2, default=jsonable)
    return report


def export(args) -> str:
    """``export``: a saved ensemble as a SavedModel, ONNX or LiteRT file.

    Stricter than `BridgeEnsemble.export`'s default: without
    ``--overwrite`` nothing is replaced, not even an earlier export.
    """
    from keras_bridge.ensemble import BridgeEnsemble
    from keras_bridge.export import check_destination

    _load_library()
    source = _existing(args.ensemble, "ENSEMBLE")
    # A destination that may not be written is refused before the load.
    check_destination(args.path, args.format, args.overwrite)
    ens = BridgeEnsemble.load(source)
    members = None
    if args.members:
        members = [m.strip() for m in args.members.split(",") if m.strip()]
    return ens.export(
        args.path,
        format=args.format,
        verbose=not args.quiet,
        members=members,
        overwrite=args.overwrite,
        quantization=args.quantization,
        opset_version=args.opset_version,
    )


def _existing(path: str, argument: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"`{argument}` {path!r} is not a file.")
    return path


COMMANDS = {
    "demo": run,
    "run": run,
    "tune": run,
    "evaluate": evaluate,
    "export": export,
}


def _load_library() -> None:
    """All that ``import keras_bridge`` loads outside the command (Keras,
    and the package's layers registered with it): a subcommand works as
    the library does."""
    import keras_bridge

    for name in keras_bridge.__all__:
        getattr(keras_bridge, name)


def main(argv=None) -> int:
    """Runs the command; a bad argument, config or input gives one line on
    stderr and exit status 2, never a traceback."""
    args = _parser().parse_args(argv)
    logger = logging.getLogger("tensorflow")
    level = logger.level
    if getattr(args, "quiet", False):
        # TensorFlow's own notices (deprecations inside the graph tools it
        # runs for FLOP counts and exports) are not errors.
        logger.setLevel(logging.ERROR)
    try:
        return _run(args)
    finally:
        logger.setLevel(level)  # a caller's process is left as it was


def _run(args) -> int:
    try:
        COMMANDS[args.command](args)
    except (
        ValueError,
        OSError,
        FloatingPointError,
        ImportError,
        RuntimeError,
    ) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        for python, flag in FLAGS.get(args.command, {}).items():
            first = first.replace(python, flag)
        print(f"keras-bridge: error: {first}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-bridge: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
