import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_bridge import curves

FAMILIES = [
    curves.Bezier(1),
    curves.Bezier(2),
    curves.Bezier(5),
    curves.PolyChain(2),
    curves.PolyChain(3),
    curves.PolyChain(6),
]


@pytest.mark.parametrize("curve", FAMILIES, ids=repr)
def test_coefficients_sum_to_one_and_hit_the_endpoints(curve):
    for t in np.linspace(0, 1, 23):
        c = np.asarray(curve(float(t)))
        assert c.shape == (curve.num_points,)
        np.testing.assert_allclose(c.sum(), 1.0, atol=1e-6)
        assert (c >= -1e-7).all()
    np.testing.assert_array_equal(curve(0.0), np.eye(curve.num_points)[0])
    np.testing.assert_array_equal(curve(1.0), np.eye(curve.num_points)[-1])


def test_bezier_matches_bernstein_polynomials_by_hand():
    t = 0.3
    np.testing.assert_allclose(
        curves.Bezier(2)(t), [0.49, 0.42, 0.09], atol=1e-6
    )
    np.testing.assert_allclose(
        curves.Bezier(3)(t), [0.343, 0.441, 0.189, 0.027], atol=1e-6
    )


def test_polychain_is_piecewise_linear_through_its_bends():
    chain = curves.PolyChain(3)
    np.testing.assert_allclose(chain(0.5), [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(chain(0.75), [0, 0.5, 0.5], atol=1e-6)


@pytest.mark.parametrize("curve", FAMILIES, ids=repr)
def test_coefficients_are_differentiable_in_t(curve):
    t = tf.Variable(0.37)
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(
            curve(t) * tf.range(curve.num_points, dtype="float32")
        )
    grad = tape.gradient(value, t)
    eps = 1e-3
    weights = np.arange(curve.num_points)
    numeric = (
        np.dot(curve(0.37 + eps), weights) - np.dot(curve(0.37 - eps), weights)
    ) / (2 * eps)
    np.testing.assert_allclose(float(grad), numeric, rtol=1e-2)


def test_serialization_round_trip():
    for curve in FAMILIES:
        config = keras.saving.serialize_keras_object(curve)
        assert keras.saving.deserialize_keras_object(config) == curve


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="degree"):
        curves.Bezier(0)
    with pytest.raises(ValueError, match="num_bends"):
        curves.PolyChain(1)
    with pytest.raises(ValueError, match="curve"):
        curves.get("spline")
