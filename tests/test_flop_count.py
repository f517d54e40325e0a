"""`kb.flops`: the count, a functional model traced once per architecture,
and the FLOPs of subsets of an ensemble's members from one trace."""

import itertools

import keras
import pytest
import tensorflow as tf

import keras_bridge as kb


def _dense(units=3, name="net"):
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(units)(inputs), name=name)


class Doubled(keras.layers.Layer):
    """A custom layer: its config does not say what ``call`` computes."""

    def __init__(self, times=1, **kwargs):
        super().__init__(**kwargs)
        self.times = times

    def call(self, x):
        for _ in range(self.times):
            x = x * 2.0
        return x

    def get_config(self):
        return super().get_config()  # leaves out `times`


@pytest.fixture
def traces(monkeypatch):
    """Counts the graphs `kb.flops` hands to TensorFlow's profiler, from
    an empty memory of counts (other tests in this process count models
    of the same architectures)."""
    monkeypatch.setattr(kb.flop_count, "_COUNTS", {})
    calls = []
    profile = tf.compat.v1.profiler.profile

    def counted(*args, **kwargs):
        calls.append(kwargs["graph"])
        return profile(*args, **kwargs)

    monkeypatch.setattr(tf.compat.v1.profiler, "profile", counted)
    return calls


def test_one_architecture_is_traced_once_whatever_its_weights(traces):
    # Other names (the model's and, made anew, its layers') and weights.
    first, second = _dense(name="a1"), _dense(name="a2")
    second.set_weights([w + 1.0 for w in first.get_weights()])
    # A dense layer 4 -> 3 with bias: 2 * 4 * 3 multiply-adds + 3 biases.
    assert kb.flops(first) == kb.flops(second) == 27
    assert len(traces) == 1
    # Another batch size, another architecture: traced, each counted.
    assert kb.flops(first, batch_size=5) == 5 * 27
    assert kb.flops(_dense(units=5, name="a1")) == 2 * 4 * 5 + 5
    assert len(traces) == 3

    # Names do not matter (new layers get new ones), dict outputs neither.
    def outputs_model():
        logits = [keras.Input((10,)), keras.Input((10,))]
        return keras.Model(logits, kb.layers.EnsembleOutputs()(logits))

    assert kb.flops(outputs_model()) == kb.flops(outputs_model()) > 0
    assert len(traces) == 4


def test_models_whose_config_may_hide_their_graph_are_traced_each_time(
    traces,
):
    def model(times, lam=False):
        inputs = keras.Input((4,))
        x = (
            keras.layers.Lambda(lambda v: v * float(times))(inputs)
            if lam
            else Doubled(times, name="doubled")(inputs)
        )
        return keras.Model(inputs, x, name="same")

    # Same config, other graphs: one multiplication per element per pass.
    assert kb.flops(model(1)) == 4
    assert kb.flops(model(3)) == 12
    assert kb.flops(model(2, lam=True)) == 4
    assert kb.flops(model(2, lam=True)) == 4
    assert len(traces) == 4
    # A Sequential model can grow: traced at each call.
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    assert kb.flops(sequential) == 27
    sequential.add(keras.layers.Dense(5))
    assert kb.flops(sequential) == 27 + 2 * 3 * 5 + 5
    assert len(traces) == 6


def _every_subset_counts_as_its_own_model(ens, names):
    members = ens.members(names)
    count = kb.inference.member_flops(
        ens.modes, ens.feature_index, members, ens.bridges, shared=ens.shared
    )
    checked = 0
    for size in range(1, len(members) + 1):
        for chosen in itertools.combinations(members, size):
            model = ens.inference_model(
                [m.name for m in chosen], temperature=1.0
            )
            assert count(chosen) == kb.flops(model), chosen
            checked += 1
    return checked


def test_member_flops_of_each_subset_equal_its_models_flops(
    tiny_bridged_ensemble, tiny_shared_ensemble
):
    """`member_flops` (one trace, used by `evaluate`) counts each subset
    of members exactly as `kb.flops` of its own inference model does:
    each trunk once, a bridge's head on top, the outputs of its size."""
    assert tiny_bridged_ensemble.member_names() == [
        "mode_0", "mode_1", "type1_0-1_r0.5",
    ]  # fmt: skip
    assert (
        _every_subset_counts_as_its_own_model(tiny_bridged_ensemble, None) == 7
    )
    shared = tiny_shared_ensemble
    assert "shared" in shared.member_names()
    assert (
        _every_subset_counts_as_its_own_model(shared, None)
        == 2 ** len(shared.member_names()) - 1
    )


@pytest.mark.large
def test_member_flops_cover_type2_and_conditioned_bridges(doc_ensemble_file):
    ens = kb.BridgeEnsemble.load(doc_ensemble_file)
    names = ens.member_names()
    conditioned = next(n for n in names if "rany" in n)
    # The conditioned bridge at two points reads one trunk: counted once.
    chosen = ["mode_0", f"{conditioned}@0.25", f"{conditioned}@0.75"]
    type2 = [n for n in names if n.startswith("type2")]
    assert len(type2) == 1  # it reads both modes' trunks
    assert _every_subset_counts_as_its_own_model(ens, chosen + type2) == 15
