"""The report's measures as pure functions: how far an agent's edit moved a draft, and the
percentiles of a handful of durations."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein


def edit_distance(draft: str, sent: str) -> float:
    """The normalised character Levenshtein distance between a draft and the reply sent: 0.0
    when sent unchanged, 1.0 when nothing of the draft is left (the distance over the longer text)."""
    return float(Levenshtein.normalized_distance(draft, sent))


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when there are none.
    Nearest rank, not interpolation: the figure is one that really happened."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]
