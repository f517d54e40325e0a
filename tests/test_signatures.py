"""The public API's shape (#19 items 1 and 6): keyword-only arguments
after the data, one return convention for the ``fit*`` methods, the head
settings grouped in `keras_bridge.bridges.HeadSpec`, and ``t`` as the one
name of a position on a curve."""

import inspect

import keras
import numpy as np
import pytest

import keras_bridge as kb
from keras_bridge.bridges import HeadSpec

#: Method -> the arguments that may be passed by position.
POSITIONAL = {
    "fit": ["data"],
    "fit_modes": ["data"],
    "fit_curves": ["data"],
    "fit_bridge": ["data"],
    "tune_bridge": ["data", "validation_data"],
    "predict": ["x"],
    "calibrate": ["data"],
    "inference_model": ["members"],
    "point_model": ["pair", "t"],
}


@pytest.mark.parametrize("method", sorted(POSITIONAL))
def test_arguments_after_the_data_are_keyword_only(method):
    parameters = inspect.signature(
        getattr(kb.BridgeEnsemble, method)
    ).parameters.values()
    positional = [
        p.name
        for p in parameters
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"
    ]
    assert positional == POSITIONAL[method]


def _ensemble(backbone):
    ens = kb.BridgeEnsemble(backbone, feature_layer="features", seed=0)
    ens.set_modes([keras.models.clone_model(backbone) for _ in range(2)])
    return ens


def _data(n=32):
    rng = np.random.default_rng(0)
    x = rng.random((n, 8, 8, 1), dtype="float32")
    return x, rng.integers(0, 10, n).astype("int32")


@pytest.mark.large
def test_fit_methods_return_a_list_of_histories(make_mini_backbone):
    ens = _ensemble(make_mini_backbone())
    x, y = _data()
    curves = ens.fit_curves((x, y), epochs=1, verbose=0)
    bridges = ens.fit_bridge(
        x, t=[0.25, 0.75], head={"width": 8, "max_flops": 4.0}, epochs=2,
        verbose=0,
    )  # fmt: skip
    for histories, count in ((curves, 1), (bridges, 1)):
        assert isinstance(histories, list) and len(histories) == count
        assert all(isinstance(h, keras.callbacks.History) for h in histories)
    assert bridges[0].epoch == [0, 1]
    # One bridge per position t on the curve.
    assert ens.member_names()[2:] == ["type1_0-1_r0.25", "type1_0-1_r0.75"]


def test_positional_settings_are_refused(make_mini_backbone):
    ens = _ensemble(make_mini_backbone())
    with pytest.raises(TypeError, match="positional"):
        ens.fit_curves(_data(), 1)


def test_head_spec_groups_the_head_settings_and_its_budget():
    spec = HeadSpec.get({"slim": 2, "base_logits": 0.5, "max_flops": 0.3})
    assert spec == HeadSpec(slim=2, base_logits=0.5, max_flops=0.3)
    assert spec.architecture() == {"slim": 2, "base_logits": 0.5}
    assert HeadSpec.get(None) == HeadSpec()
    assert HeadSpec().architecture() is None
    with pytest.raises(ValueError, match="`head` accepts the keys"):
        HeadSpec.get({"max_flop": 0.3})


def test_a_budget_in_the_head_spec_bounds_the_head(tiny_ensemble):
    ens = tiny_ensemble  # two modes and their curve: nothing trains here
    x, _ = _data()
    with pytest.raises(ValueError, match="No bridge head fits `max_flops`"):
        ens.fit_bridge(x, head=HeadSpec(slim=1, max_flops=0.01), epochs=1)
    assert list(ens.bridges) == []


def test_errors_name_the_position_t():
    with pytest.raises(ValueError, match=r"`t` must be a curve position"):
        kb.bridges.check_points("half")
    with pytest.raises(ValueError, match=r"received t=1\.5"):
        kb.bridges.check_points([0.5, 1.5])
    with pytest.raises(ValueError, match="`t` must not repeat"):
        kb.bridges.check_points((0.2, 0.2))
    assert kb.members.parse("type1_0-1_rany@0.3").t == 0.3
    head = kb.layers.BridgeHead(10, width=8, depth=1, conditioned=True)
    features = np.ones((2, 4, 4, 8), "float32")
    assert tuple(head(features, t=0.3).shape) == (2, 10)
