import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

import keras_bridge as kb  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    return kb.data.load_digits(batch_size=64)


@pytest.fixture(scope="session")
def trained_ensemble(digits):
    """Two digits modes and a fitted curve, shared by the slower tests."""
    keras.config.disable_traceback_filtering()
    backbone = kb.models.resnet(
        digits.input_shape, digits.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(digits.train, epochs=15, verbose=0)
    line = ens.curve_profile(digits.test, num_points=3)
    ens.fit_curves(digits.train, validation_data=digits.validation, verbose=0)
    return ens, line


@pytest.fixture(scope="session")
def bridged_ensemble(trained_ensemble, digits):
    """The trained ensemble with a Type I, a Type II and a conditioned
    bridge on its curve."""
    ens, _ = trained_ensemble
    ens.fit_bridge(digits.train, kind="type1", epochs=40, verbose=0)
    ens.fit_bridge(digits.train, kind="type2", epochs=20, verbose=0)
    ens.fit_bridge(digits.train, points="any", epochs=20, verbose=0)
    return ens
