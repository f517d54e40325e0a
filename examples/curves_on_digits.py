"""Train two modes on the bundled digits data and connect them by a curve.

Run: python examples/curves_on_digits.py
"""

import keras_bridge as kb


def main():
    data = kb.data.load_digits()
    backbone = kb.models.resnet(
        data.input_shape, data.num_classes, depth=8, width=0.5
    )
    ens = kb.BridgeEnsemble(backbone, num_modes=2, seed=0)
    ens.fit_modes(data.train, epochs=15, verbose=0)
    print(ens.curve_profile(data.test, num_points=5, bn_data=data.train))
    ens.fit_curves(data.train, validation_data=data.validation, verbose=0)
    print(ens.curve_profile(data.test, num_points=5, bn_data=data.train))
    print("midpoint check (validation accuracy):", ens.curve_checks[(0, 1)])


if __name__ == "__main__":
    main()
