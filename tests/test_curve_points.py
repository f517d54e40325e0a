"""Curve points are saved as their statistics and rebuilt exactly."""

import json
import zipfile

import keras
import numpy as np
import pytest

import keras_bridge as kb
from keras_bridge.curve_model import (
    point_from_statistics,
    point_model,
    point_statistics,
    to_curve_model,
)
from keras_bridge.curve_points import CurvePoints

KEY = ((0, 1), 0.5)


def _config(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("config.json"))["config"]


def _assert_same_weights(a, b):
    left, right = a.get_weights(), b.get_weights()
    assert len(left) == len(right) > 0
    for u, v in zip(left, right):
        np.testing.assert_array_equal(u, v)


@pytest.fixture
def fitted(tiny_ensemble, digits):
    """A tiny ensemble with a Type I bridge fitted in this process: its
    teacher (t=0.5, BatchNorm recalibrated on data) is a built point."""
    ens = tiny_ensemble
    ens.fit_bridge(digits.train.take(2), epochs=1, verbose=0)
    assert ens.curve_points.statistics(KEY) is None  # built
    return ens


@pytest.mark.large
def test_a_saved_point_is_its_statistics_and_comes_back_exactly(
    fitted, digits, tmp_path
):
    ens = fitted
    teacher = ens.curve_points[KEY]
    path = ens.save(tmp_path / "a.keras")
    config = _config(path)
    # No network is stored for the point: only its non-trainable weights.
    assert config["points"] == [] and config["metadata"]["points"] == []
    assert config["metadata"]["point_statistics"] == [[[0, 1], 0.5]]
    (layer,) = config["statistics"]
    shapes = [w.shape for w in teacher.non_trainable_weights]
    assert [tuple(s) for s in layer["config"]["shapes"]] == shapes

    loaded = kb.BridgeEnsemble.load(path)
    assert loaded.curve_points.statistics(KEY) is not None  # not built
    x, _ = kb.data.to_numpy(digits.test)
    expected, outputs = ens.predict(x[:50]), loaded.predict(x[:50])
    for name in expected:
        np.testing.assert_array_equal(outputs[name], expected[name])
    # Saved again before it is built: the same statistics.
    again = kb.BridgeEnsemble.load(loaded.save(tmp_path / "b.keras"))
    # A hand-edited file whose statistics do not fit is refused, named.
    edited = tmp_path / "edited.keras"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(edited, "w") as out:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                whole = json.loads(data)
                whole["config"]["metadata"]["point_statistics"] = []
                data = json.dumps(whole)
            out.writestr(item, data)
    with pytest.raises(ValueError, match=r"\['point_statistics'\]"):
        kb.BridgeEnsemble.load(edited)
    for copy in (loaded, again):
        point = copy.point_model(*KEY)
        assert copy.curve_points.statistics(KEY) is None  # built now
        _assert_same_weights(point, teacher)
        np.testing.assert_array_equal(
            point(x[:50], training=False), teacher(x[:50], training=False)
        )


@pytest.mark.large
def test_a_point_changed_since_is_saved_whole(fitted, tmp_path):
    ens = fitted
    teacher = ens.curve_points[KEY]
    kernel = next(w for w in teacher.trainable_weights if len(w.shape) == 4)
    kernel.assign(kernel.numpy() + 0.5)  # no longer the curve at 0.5
    path = ens.save(tmp_path / "changed.keras")
    config = _config(path)
    assert config["metadata"]["points"] == [[[0, 1], 0.5]]
    assert "point_statistics" not in config["metadata"]
    assert config["metadata"]["format_version"] == 2  # older versions read it
    loaded = kb.BridgeEnsemble.load(path)
    _assert_same_weights(loaded.point_model(*KEY), teacher)


@pytest.fixture(scope="module")
def curve(make_mini_backbone):
    """The curve between two mini backbones and its point at 0.5 with
    BatchNorm statistics of its own (as data would give)."""
    a, b = make_mini_backbone("a"), make_mini_backbone("b")
    curve_model = to_curve_model(a, b)
    point = point_model(curve_model, 0.5, a)
    for variable in point.non_trainable_weights:
        variable.assign(np.random.default_rng(0).random(variable.shape))
    return curve_model, a, point


def test_point_statistics_describe_only_a_point_of_the_curve(curve):
    curve_model, a, point = curve
    statistics = point_statistics(point, curve_model, 0.5, a)
    # The BatchNorm statistics, by position among the 14 weights.
    assert sorted(statistics) == [4, 5, 10, 11]
    _assert_same_weights(
        point_from_statistics(curve_model, 0.5, a, statistics), point
    )
    # Another position, or an end of the curve: not this point.
    assert point_statistics(point, curve_model, 0.25, a) is None
    assert point_statistics(a, curve_model, 0.5, a) is None
    # The same weights in another graph (a softmax output), or in a
    # model whose graph may change (subclassed): not a point either.
    config = point.get_config()
    config["layers"][-1]["config"]["activation"] = "softmax"
    other = keras.Model.from_config(config)
    other.set_weights(point.get_weights())
    assert point_statistics(other, curve_model, 0.5, a) is None

    class Wrapper(keras.Model):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, x):
            return self.inner(x)

    assert point_statistics(Wrapper(point), curve_model, 0.5, a) is None
    with pytest.raises(ValueError, match="`statistics` names the weight 99"):
        point_from_statistics(curve_model, 0.5, a, {99: np.zeros(8)})
    with pytest.raises(ValueError, match=r"shape \(3,\) for the weight 4"):
        point_from_statistics(curve_model, 0.5, a, {4: np.zeros(3)})


def test_frozen_layers_change_nothing_a_point_rebuilds_to(curve):
    curve_model, a, point = curve
    statistics = point_statistics(point, curve_model, 0.5, a)
    # A template with a layer frozen since the point was made.
    frozen = keras.models.clone_model(a)
    frozen.get_layer("stem_conv").trainable = False
    _assert_same_weights(
        point_from_statistics(curve_model, 0.5, frozen, statistics), point
    )
    # A point frozen since it was made is no longer the template's graph
    # (its config says so): `save` stores it whole.
    copy = point_from_statistics(curve_model, 0.5, a, statistics)
    copy.trainable = False
    assert point_statistics(copy, curve_model, 0.5, a) is None
    # A template frozen in part from the start: the frozen weights are
    # stored with the statistics, and come back.
    copy = point_from_statistics(curve_model, 0.5, frozen, statistics)
    part = point_statistics(copy, curve_model, 0.5, frozen)
    assert sorted(part) == [0, 1, 4, 5, 10, 11]
    _assert_same_weights(
        point_from_statistics(curve_model, 0.5, frozen, part), point
    )


def test_curve_points_build_each_point_once_when_looked_up(curve):
    curve_model, a, point = curve
    statistics = point_statistics(point, curve_model, 0.5, a)
    points = CurvePoints({((0, 2), 0.5): a})
    points.add_statistics(KEY, curve_model, a, statistics)
    points.add_statistics(((1, 2), 0.5), curve_model, a, statistics)
    assert len(points) == 3 and KEY in points
    assert set(points) == {((0, 2), 0.5), KEY, ((1, 2), 0.5)}
    # Copies and `without_pairs` keep points unbuilt.
    copy = CurvePoints(points).without_pairs([(1, 2)])
    assert set(copy) == {((0, 2), 0.5), KEY}
    assert copy.statistics(KEY) is statistics
    assert copy[((0, 2), 0.5)] is a
    built = copy[KEY]
    assert copy[KEY] is built and copy.statistics(KEY) is None
    _assert_same_weights(built, point)
    assert points.statistics(KEY) is statistics  # the original: unbuilt
    del points[KEY]
    assert KEY not in points and len(points) == 2
    points[((1, 2), 0.5)] = a  # replaces the unbuilt point
    assert points.statistics(((1, 2), 0.5)) is None
    assert points[((1, 2), 0.5)] is a
