import fcntl
import gc
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_bridge as kb  # noqa: E402

#: Modules whose tests take minutes (whole pipelines, several processes),
#: longest first: run first, so that neither worker is left with one of
#: them at the end while the other is idle.
LONG_MODULES = (
    "test_cli.py",
    "test_readme.py",
    "test_distribute.py",
    "test_cluster.py",
    "test_resume.py",
)


#: The session fixtures that train a shared ensemble (seconds to a
#: minute each), longest first, then `litert_files`, which converts what
#: `ensemble_files` built (27 s): left in place, that conversion ran last,
#: on one worker, while the other had finished. Only the first test of
#: each moves; the rest of its `xdist_group` stays on the same worker.
BUILDS = (
    "ensemble_files", "doc_ensemble_file", "tiny_bridged_files",
    "litert_files",
)  # fmt: skip


def pytest_collection_modifyitems(config, items):
    """Runs `LONG_MODULES` first and, right after the longest test, the
    first test of each of `BUILDS`: one worker builds those ensembles
    while the other runs the longest test, before any other test asks for
    them (a worker that asks for an ensemble the other is building waits
    idle). Every other test keeps its place. (pytest-xdist hands out work
    in this order, one test or `xdist_group` at a time: ``--dist
    loadgroup --no-loadscope-reorder`` in pyproject.toml.)"""

    def rank(item):
        name = item.path.name
        return LONG_MODULES.index(name) if name in LONG_MODULES else 99

    items.sort(key=rank)  # stable: the rest keep their order
    for place, fixture in enumerate(BUILDS, start=1):
        for index, item in enumerate(items[place:], start=place):
            if fixture in getattr(item, "fixturenames", ()):
                items.insert(place, items.pop(index))
                break


def pytest_collection_finish(session):
    """Freezes the objects that importing the tests made (TensorFlow,
    Keras, KerasTuner, the package: about 390,000) out of Python's garbage
    collector. A full collection walked them all, about 0.5 s each time,
    and Keras' `clear_session` and KerasTuner run one before every trial
    of a search. Objects made by the tests are collected as before. On
    the tuning, docstring, README and state tests (2 workers), the
    workers' time in the collector fell from 52 s to 33 s and the run's
    from 294 s to 277 s."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def digits():
    return kb.data.load_digits(batch_size=64)


def _train_ensemble_files(digits, folder):
    backbone = kb.models.resnet(
        digits.input_shape, digits.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(digits.train, epochs=8, verbose=0)
    line = ens.curve_profile(digits.test, num_points=3, bn_data=digits.train)
    ens.fit_curves(digits.train, validation_data=digits.validation, verbose=0)
    ens.save(folder / "curves.keras")
    ens.fit_bridge(digits.train, kind="type1", epochs=20, verbose=0)
    ens.fit_bridge(digits.train, kind="type2", epochs=10, verbose=0)
    ens.fit_bridge(digits.train, t="any", epochs=10, verbose=0)
    ens.save(folder / "bridged.keras")
    (folder / "line.json").write_text(json.dumps(line.to_dict()))


def _profile(values) -> kb.CurveProfile:
    return kb.CurveProfile(
        values["kind"], tuple(values["pair"]),
        *(np.asarray(values[key]) for key in ("t", "accuracy", "nll")),
    )  # fmt: skip


def _shared_folder(tmp_path_factory, name, build):
    """A folder that ``build(folder)`` fills once per test run: pytest-xdist
    workers share it (the first to take its lock builds it)."""
    # The parent of a worker's base folder is shared by all workers.
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    folder.mkdir(exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "done").exists():
            build(folder)
            (folder / "done").touch()
    return folder


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory):
    """``shared_folder(name, build)``: the folder ``name`` that
    ``build(folder)`` fills once per test run, whichever pytest-xdist
    worker asks first (a module fixture would be built once per worker
    that runs one of its tests). ``build`` writes only what the tests
    read; the folder also holds the marker ``done``."""

    def folder(name, build):
        return _shared_folder(tmp_path_factory, name, build)

    return folder


@pytest.fixture(scope="session")
def ensemble_files(digits, tmp_path_factory):
    """Two digits modes with a fitted curve, saved before and after a
    Type I, a Type II and a conditioned bridge are trained on it. Tests
    load their own copy (`trained_ensemble`, `bridged_ensemble`), so no
    test sees another's changes. Trained once per test run."""
    keras.config.disable_traceback_filtering()
    folder = _shared_folder(
        tmp_path_factory, "session-ensembles",
        lambda folder: _train_ensemble_files(digits, folder),
    )  # fmt: skip
    return {
        "curves": folder / "curves.keras",
        "bridged": folder / "bridged.keras",
        "line": _profile(json.loads((folder / "line.json").read_text())),
    }


@pytest.fixture(scope="session")
def read_only_bridged(ensemble_files):
    """One loaded copy of the bridged ensemble (`bridged_ensemble`) per
    worker, for the tests that only read it. Session-scoped, as are the
    other read-only fixtures: pytest-xdist interleaves the modules, and
    a module fixture is torn down and rebuilt each time a worker comes
    back to its module."""
    return kb.BridgeEnsemble.load(ensemble_files["bridged"])


@pytest.fixture
def trained_ensemble(ensemble_files):
    """A fresh copy of two digits modes and their fitted curve, and the
    straight line's profile measured before the curve was fitted."""
    ens = kb.BridgeEnsemble.load(ensemble_files["curves"])
    return ens, ensemble_files["line"]


@pytest.fixture
def bridged_ensemble(ensemble_files):
    """A fresh copy of the trained ensemble with a Type I, a Type II and a
    conditioned bridge on its curve."""
    return kb.BridgeEnsemble.load(ensemble_files["bridged"])


def mini_backbone(name="mini"):
    """Seven layers, BatchNormalization before and after the feature
    layer: a network that traces ~3x faster than the smallest ResNet, for
    tests of behaviour, not of quality."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(name="features")(x)
    x = keras.layers.Conv2D(8, 3, padding="same")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(10)(x), name=name)


@pytest.fixture(scope="session")
def make_mini_backbone():
    """`mini_backbone`, for tests that build their own ensemble to test
    behaviour (its feature layer is ``"features"``)."""
    return mini_backbone


def _build_tiny(digits, folder):
    backbone = mini_backbone()
    ens = kb.BridgeEnsemble(backbone, feature_layer="features", seed=0)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    ens.fit_curves(digits.train, epochs=1, verbose=0)
    ens.save(folder / "tiny.keras")


@pytest.fixture(scope="session")
def tiny_ensemble_file(digits, tmp_path_factory):
    folder = _shared_folder(
        tmp_path_factory, "session-tiny",
        lambda folder: _build_tiny(digits, folder),
    )  # fmt: skip
    return folder / "tiny.keras"


@pytest.fixture
def tiny_ensemble(tiny_ensemble_file):
    """Two untrained (freshly initialised) modes of `mini_backbone` and a
    1-epoch curve: for tests of behaviour, not of quality. Each test loads
    its own copy of one file built once per run."""
    return kb.BridgeEnsemble.load(tiny_ensemble_file)


def _build_tiny_bridged(tiny_file, digits, folder):
    ens = kb.BridgeEnsemble.load(tiny_file)
    ens.fit_bridge(digits.train.take(2), epochs=1, verbose=0)
    ens.save(folder / "tiny_bridged.keras")
    ens = kb.BridgeEnsemble.load(tiny_file)
    ens.fit_bridge(digits.train.take(2), trunk="shared", epochs=1, verbose=0)
    ens.save(folder / "tiny_shared.keras")


@pytest.fixture(scope="session")
def tiny_bridged_files(tiny_ensemble_file, digits, tmp_path_factory):
    folder = _shared_folder(
        tmp_path_factory, "session-tiny-bridged",
        lambda folder: _build_tiny_bridged(tiny_ensemble_file, digits, folder),
    )  # fmt: skip
    return {
        "type1": folder / "tiny_bridged.keras",
        "shared": folder / "tiny_shared.keras",
    }


@pytest.fixture
def tiny_bridged_ensemble(tiny_bridged_files):
    """`tiny_ensemble` with a Type I bridge of one short epoch: for tests
    of what a call does to an ensemble that has bridges."""
    return kb.BridgeEnsemble.load(tiny_bridged_files["type1"])


@pytest.fixture
def tiny_shared_ensemble(tiny_bridged_files):
    """`tiny_ensemble` with a shared trunk and its Type I head, one short
    epoch: for tests of structure, not of quality."""
    return kb.BridgeEnsemble.load(tiny_bridged_files["shared"])


def _train_doc_ensemble(digits, folder):
    ens = kb.BridgeEnsemble(
        mini_backbone(), feature_layer="features", num_modes=2, seed=0
    )
    ens.fit_modes(digits.train, epochs=3, verbose=0)
    ens.fit_curves(digits.train, epochs=2, verbose=0)
    ens.fit_bridge(digits.train, kind="type1", epochs=2, verbose=0)
    ens.fit_bridge(digits.train, kind="type2", epochs=1, verbose=0)
    ens.fit_bridge(digits.train, t="any", epochs=1, verbose=0)
    ens.save(folder / "ensemble.keras")


@pytest.fixture(scope="session")
def doc_ensemble_file(digits, tmp_path_factory):
    """A small trained ensemble with every kind of member (two modes of
    `mini_backbone`, their curve, a Type I, a Type II and a t-conditioned
    bridge) for the docstring examples and the export tests: they show
    calls, not quality. Trained once per test run."""
    folder = _shared_folder(
        tmp_path_factory, "session-doc-ensemble",
        lambda folder: _train_doc_ensemble(digits, folder),
    )  # fmt: skip
    return folder / "ensemble.keras"
