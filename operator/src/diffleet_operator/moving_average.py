"""The exponentially weighted moving average the operator's observed timings use (the
autoscaler's run, load and start times; the fleet's slot occupancy)."""

# Weight of a new sample.
SMOOTHING = 0.2


def smoothed(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + SMOOTHING * (sample - previous)
