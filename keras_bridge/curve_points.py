"""The curve networks an ensemble has made, built when first used."""

import collections.abc

from keras_bridge.curve_model import point_from_statistics


class CurvePoints(collections.abc.MutableMapping):
    """The curve networks an ensemble has made, by ``(pair, t)``.

    A dict of models, except that a point read from a file is kept as its
    non-trainable weights (`keras_bridge.curve_model.point_statistics`)
    and built the first time it is looked up: loading an ensemble builds
    none of its points (a t-conditioned bridge has eleven teachers), and
    saving it again writes those weights without building them.

    Args:
        points: a mapping of ``(pair, t)`` to models, or another
            `CurvePoints` (its unbuilt points stay unbuilt).

    Example:

    >>> from keras_bridge.curve_model import point_statistics
    >>> key, curve = ((0, 1), 0.5), ens.curves[(0, 1)]
    >>> saved = point_statistics(ens.point_model(*key), curve, 0.5,
    ...     ens.backbone)
    >>> points = CurvePoints()
    >>> points.add_statistics(key, curve, ens.backbone, saved)
    >>> points.statistics(key) is saved  # not built yet
    True
    >>> isinstance(points[key], keras.Model)  # built now
    True
    >>> points.statistics(key) is None
    True
    """

    def __init__(self, points=()):
        self._models = {}
        self._unbuilt = {}  # key -> (curve model, template, statistics)
        unbuilt = {}
        if isinstance(points, CurvePoints):
            unbuilt = points.unbuilt()
        for key in points:
            if key in unbuilt:
                self.add_statistics(key, *unbuilt[key])
            else:
                self._models[key] = points[key]

    def add_statistics(self, key, curve_model, template, statistics) -> None:
        """Adds the point ``key`` = ``(pair, t)`` of ``curve_model`` as
        ``statistics``, its non-trainable weights by position (what
        `keras_bridge.curve_model.point_statistics` returns);
        ``template`` is a model of the curve's architecture (the
        ensemble's backbone)."""
        self._models.pop(key, None)
        self._unbuilt[key] = (curve_model, template, statistics)

    def unbuilt(self) -> dict:
        """The points not built yet: ``{key: (curve model, template,
        statistics)}``, the arguments `add_statistics` took."""
        return dict(self._unbuilt)

    def statistics(self, key):
        """The non-trainable weights of the point ``key`` when it is not
        built yet, else None."""
        entry = self._unbuilt.get(key)
        return None if entry is None else entry[2]

    def __getitem__(self, key):
        if key in self._unbuilt:
            curve_model, template, statistics = self._unbuilt[key]
            self._models[key] = point_from_statistics(
                curve_model, key[1], template, statistics
            )
            del self._unbuilt[key]
        return self._models[key]

    def __setitem__(self, key, model) -> None:
        self._unbuilt.pop(key, None)
        self._models[key] = model

    def __delitem__(self, key) -> None:
        if key in self._unbuilt:
            del self._unbuilt[key]
        else:
            del self._models[key]

    def __contains__(self, key) -> bool:
        return key in self._models or key in self._unbuilt

    def __iter__(self):
        yield from list(self._models)
        yield from list(self._unbuilt)

    def __len__(self) -> int:
        return len(self._models) + len(self._unbuilt)

    def without_pairs(self, pairs) -> "CurvePoints":
        """A copy without the points of the curves ``pairs``."""
        kept = CurvePoints(self)
        for key in [key for key in kept if key[0] in pairs]:
            del kept[key]
        return kept

    def __repr__(self) -> str:
        built = sorted(self._models)
        return f"CurvePoints({len(self)} points; built: {built})"
