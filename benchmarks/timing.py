"""Timing helper shared by the benchmark scripts."""

import time

import numpy as np


def interleaved_medians(fns: dict, runs: int) -> dict:
    """Median wall time of each function, runs interleaved in one process.

    Every function runs once to warm up (tracing, allocation), then the
    functions take turns ``runs`` times, so that load changes on a shared
    machine hit all of them alike.

    Args:
        fns: dict from name to a function of no arguments.
        runs: timed runs of each function.

    Returns:
        Dict from name to the median time in seconds.
    """
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}
