"""Every docstring example in `keras_bridge` runs, so none can rot.

`doctest.DocTestFinder` collects the examples of every module of the
package (one test per docstring, named by its qualified name) and
`doctest.DocTestRunner` runs each (ELLIPSIS and NORMALIZE_WHITESPACE on)
in a fresh copy of its module's globals, inside an empty working folder,
with these names added:

- ``keras``, ``np``, ``kb`` and ``keras_bridge``;
- ``data``: the digits splits (`kb.data.load_digits`), and ``x_test``:
  the test images as a NumPy array.

Examples that use a small trained ensemble (`conftest.doc_ensemble_file`:
two digits modes of `conftest.mini_backbone`, their curve, a Type I, a Type
II and a t-conditioned bridge) get it as ``ens``, and a copy of its file
as ``ensemble.keras`` in the working folder; an example that builds its
own ``ens`` gets neither. The examples show calls, not quality, so the
ensemble is the smallest that has every kind of member (saving,
exporting and evaluating it is most of an example's time).
Examples that may change ``ens`` (they fit, tune or calibrate it, set
one of its attributes, or hand it to another object, unless that object
is documented to leave it alone: `READS_ONLY`) get their own copy; the
others share one (`evaluate` changes nothing). Like the other tests of
that ensemble, they are marked ``large``.
"""

import doctest
import importlib
import os
import pkgutil
import re
import shutil

import keras
import numpy as np
import pytest

import keras_bridge as kb

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

#: Examples that cannot run here, with why. Each is in a file whose
#: owner fixes it; remove the entry when the example runs.
BROKEN = {}

#: Examples that need data this machine may not have.
NEEDS = {
    "keras_bridge.data.load_fashion_mnist": (
        os.path.isdir(kb.data.FASHION_MNIST_DIR),
        f"Fashion-MNIST is not installed in {kb.data.FASHION_MNIST_DIR}",
    ),
}

#: Examples that train or export (2 s or more in a full run): `large`,
#: so that the quick loop (`-m "not large"`) stays quick.
SLOW = {
    "keras_bridge.archive.EnsembleArchive",
    "keras_bridge.archive.read",
    "keras_bridge.archive.write",
    "keras_bridge.curve_model.point_model",
    "keras_bridge.data.load_fashion_mnist",
    "keras_bridge.distillation.BridgeDistiller",
    "keras_bridge.ensemble.BridgeEnsemble",
    "keras_bridge.ensemble.BridgeEnsemble.calibrate",
    "keras_bridge.ensemble.BridgeEnsemble.fit_bridge",
    "keras_bridge.ensemble.BridgeEnsemble.predict",
    "keras_bridge.ensemble.BridgeEnsemble.tune_bridge",
    "keras_bridge.ensemble_fit.FitMixin.fit",
    "keras_bridge.ensemble_fit.FitMixin.fit_unit",
    "keras_bridge.ensemble_reports.ReportsMixin.evaluate",
    "keras_bridge.ensemble_reports.ReportsMixin.select_members",
    "keras_bridge.ensemble_saving.SavingMixin.export",
    "keras_bridge.ensemble_saving.SavingMixin.save",
    "keras_bridge.export.check_overwrite",
    "keras_bridge.export.export",
    "keras_bridge.export.litert.export_litert",
    "keras_bridge.export.litert.read_litert_metadata",
    "keras_bridge.export.onnx.export_onnx",
    "keras_bridge.export.onnx.read_onnx_metadata",
    "keras_bridge.export.saved_model.export_saved_model",
    "keras_bridge.export.saved_model.read_saved_model_metadata",
    "keras_bridge.tuning.BridgeHyperModel",
}

#: Examples that hand ``ens`` to an object documented not to change it.
READS_ONLY = {
    "keras_bridge.tuning.BridgeHyperModel",  # until `install` is called
}

_USES_ENSEMBLE = re.compile(r"\bens\b|ensemble\.keras")
_BUILDS_ENSEMBLE = re.compile(r"^ens\s*=", re.MULTILINE)
_CHANGES_ENSEMBLE = re.compile(
    r"\bens\.(fit|tune|set|calibrate)\w*\("  # a method that changes it
    r"|\bens\.\w+\s*=[^=]"  # an attribute set
    r"|\(ens\b|,\s*ens\b"  # handed to another object
)


def _source(test) -> str:
    return "".join(example.source for example in test.examples)


def _docstring_tests() -> list:
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = []
    for info in pkgutil.walk_packages(kb.__path__, "keras_bridge."):
        module = importlib.import_module(info.name)
        found += [test for test in finder.find(module) if test.examples]
    return sorted(found, key=lambda test: test.name)


def _params() -> list:
    params = []
    for test in _docstring_tests():
        marks = []
        if test.name in SLOW or _USES_ENSEMBLE.search(_source(test)):
            marks.append(pytest.mark.large)
        if test.name in BROKEN:
            marks.append(pytest.mark.skip(reason=BROKEN[test.name]))
        if test.name in NEEDS and not NEEDS[test.name][0]:
            marks.append(pytest.mark.skip(reason=NEEDS[test.name][1]))
        params.append(pytest.param(test, id=test.name, marks=marks))
    return params


@pytest.fixture(scope="session")
def x_test(digits):
    return kb.data.to_numpy(digits.test)[0]


@pytest.fixture(scope="session")
def shared_ensemble(doc_ensemble_file):
    """One copy of the examples' ensemble for those that only read it."""
    return kb.BridgeEnsemble.load(doc_ensemble_file)


def _ensemble(request, name, source):
    """The examples' ensemble for an example, its file copied into the
    working folder."""
    path = request.getfixturevalue("doc_ensemble_file")
    shutil.copyfile(path, "ensemble.keras")
    if name not in READS_ONLY and _CHANGES_ENSEMBLE.search(source):
        return kb.BridgeEnsemble.load(path)
    return request.getfixturevalue("shared_ensemble")


@pytest.mark.parametrize("test", _params())
def test_docstring_example(
    test, request, tmp_path, monkeypatch, digits, x_test
):
    monkeypatch.chdir(tmp_path)
    names = {
        "keras": keras,
        "np": np,
        "kb": kb,
        "keras_bridge": kb,
        "data": digits,
        "x_test": x_test,
    }
    source = _source(test)
    if _USES_ENSEMBLE.search(source) and not _BUILDS_ENSEMBLE.search(source):
        names["ens"] = _ensemble(request, test.name, source)
    test = doctest.DocTest(
        test.examples,
        {**test.globs, **names},
        test.name,
        test.filename,
        test.lineno,
        test.docstring,
    )
    report = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)
