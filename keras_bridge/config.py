"""The validated configuration of a `keras-bridge run`.

A config is a YAML file of sections, each a pydantic model that refuses
unknown keys and values of the wrong type, naming the key. Every key has
a default, so an empty file (or no file) is the default run on the
bundled digits: ``keras-bridge run --print-config`` writes it out.

Example:

>>> config = parse({"modes": {"num_modes": 2}})
>>> config.modes.num_modes, config.modes.epochs
(2, 20)
>>> parse({"modes": {"num_modez": 2}})
Traceback (most recent call last):
...
ValueError: config key `modes.num_modez`: extra inputs are not permitted.
"""

import re
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    field_validator,
)

#: A finite number > 0 (YAML's ``.inf`` and ``.nan`` are refused).
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]

#: A finite number >= 0.
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_default=True
    )


class DataConfig(_Section):
    """Which data: ``digits`` (bundled), ``fashion_mnist`` (read from the
    Debian package or ``data_dir``, never downloaded) or a prepared TFDS
    dataset name (with ``data_dir``)."""

    name: str = "digits"
    data_dir: str | None = None
    batch_size: PositiveInt = 64
    validation_size: PositiveInt = Field(
        5000, description="fashion_mnist: training images held out"
    )


class BackboneConfig(_Section):
    """The network every mode copies: ``kb.models.resnet`` (``depth`` =
    6 n + 2), ``kb.models.plain_cnn`` or ``kb.models.mobilenet_v3_style``,
    at ``width`` x the base width."""

    family: Literal["resnet", "plain_cnn", "mobilenet_v3_style"] = "resnet"
    depth: PositiveInt = 8
    width: PositiveFloat = 0.5

    @field_validator("depth")
    @classmethod
    def _six_n_plus_two(cls, depth: int) -> int:
        if depth < 8 or (depth - 2) % 6:
            raise ValueError("must be 6 n + 2 (8, 14, 20, 32, ...)")
        return depth


class ModesConfig(_Section):
    """`BridgeEnsemble.fit_modes`."""

    num_modes: int = Field(3, ge=2)
    epochs: PositiveInt = 20
    learning_rate: PositiveFloat = 2e-3


class CurvesConfig(_Section):
    """`BridgeEnsemble.fit_curves`; ``num_points``: the points of each
    curve profile (`BridgeEnsemble.curve_profile`)."""

    epochs: PositiveInt = 20
    learning_rate: PositiveFloat = 1e-2
    num_points: int = Field(11, ge=2)


class BridgesConfig(_Section):
    """`BridgeEnsemble.fit_bridge`: Type I bridges on every curve, and a
    Type II bridge on the anchor's first curve when ``type2``; early
    stopping on ``val_kl`` after ``patience`` epochs without progress.
    ``trunk``: ``"frozen"`` (heads read the anchor's own features) or
    ``"shared"`` (one trunk trained with every Type I head; see
    `BridgeEnsemble.fit_bridge`)."""

    epochs: PositiveInt = 60
    patience: PositiveInt | None = 10
    learning_rate: PositiveFloat = 6e-3
    mixup_alpha: NonNegativeFloat = 0.4
    max_flops: PositiveFloat | None = None
    type2: bool = True
    trunk: Literal["frozen", "shared"] = "frozen"


class TuningConfig(_Section):
    """`BridgeEnsemble.tune_bridge` on the anchor's first curve, before
    the Type I bridges, which then train with the best hyperparameters."""

    enabled: bool = False
    tuner: Literal["hyperband", "random", "bayesian"] = "hyperband"
    max_trials: PositiveInt = 10
    epochs: PositiveInt = 20
    max_flops: PositiveFloat | None = None


class ExportConfig(_Section):
    """What the run exports besides ``ensemble.keras``."""

    saved_model: bool = True
    onnx: bool = True


class RunConfig(_Section):
    """A whole run. ``output``: the run folder (default
    ``runs/<data.name>``); a folder holding an earlier run is never
    reused: ``-2``, ``-3``, ... is appended instead."""

    seed: NonNegativeInt = 0
    output: str | None = None
    plots: bool = True
    data: DataConfig = DataConfig()
    backbone: BackboneConfig = BackboneConfig()
    modes: ModesConfig = ModesConfig()
    curves: CurvesConfig = CurvesConfig()
    bridges: BridgesConfig = BridgesConfig()
    tuning: TuningConfig = TuningConfig()
    export: ExportConfig = ExportConfig()

    @property
    def output_folder(self) -> str:
        return self.output or f"runs/{self.data.name.replace('/', '_')}"


#: The quick preset of ``keras-bridge demo``: about 2-3 minutes on 2 CPU
#: cores.
DEMO = {
    "output": "runs/demo",
    "modes": {"num_modes": 3, "epochs": 15},
    "curves": {"epochs": 10},
    "bridges": {"epochs": 40},
    "export": {"onnx": False},
}


def parse(values, source: str = "config") -> RunConfig:
    """A `RunConfig` from a dict; a bad key or value raises ValueError
    naming it (``section.key``)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(
            f"{source} must be a mapping of sections; received "
            f"{type(values).__name__}."
        )
    try:
        return RunConfig.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top)"
        message = first["msg"].removeprefix("Value error, ")
        message = message[0].lower() + message[1:]
        if first["type"] != "extra_forbidden" and "input" in first:
            message += f" (received {first['input']!r})"
        raise ValueError(f"{source} key `{key}`: {message}.") from None


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, reading ``1e-3`` as a number as YAML 1.2
    does (1.1 needs ``1.0e-3``, and reads ``1e-3`` as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(path: str) -> RunConfig:
    r"""Reads and validates the YAML config at ``path``.

    Example:

    >>> with open("run.yaml", "w") as handle:
    ...     _ = handle.write("modes:\n  learning_rate: 1e-3\n")
    >>> load("run.yaml").modes.learning_rate
    0.001
    """
    try:
        with open(path) as handle:
            values = yaml.load(handle, Loader=_Loader)
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None
    return parse(values, source=path)


def dump(config: RunConfig) -> str:
    """``config`` as YAML, every key spelled out."""
    return yaml.safe_dump(
        config.model_dump(), sort_keys=False, default_flow_style=False
    )
