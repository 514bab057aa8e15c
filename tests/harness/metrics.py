"""The recorder's metrics as a test reads them: from this process's registry, through its
public API (an in-process daemon, stream or writer counts into the registry the test reads).
"""

from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series never touched (a counter still at zero)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def metric_total(name: str) -> float:
    """The sum of every sample named `name`, whatever its labels."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name
    )
