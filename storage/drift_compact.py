"""How a drift report's per-feature detail is stored: whole where it alarmed, compact elsewhere.

A window test reports some twenty figures per feature (means, spreads, category shifts...),
about 19 KB of JSON per 41-feature window: 19 MB per million records at a window of 1,000.
Nobody reads the detail of features that did not move, but their statistics and p-values are
what a trend plot or a threshold review needs. So a feature keeps only its test, statistic,
p-values and verdict (four significant digits, in one array under a single list of field names),
unless the window alarmed and that feature moved: its whole detail is kept, since an incident
points at it. Reading expands the compact form back into the usual list of dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

COMPACT_VERSION: Final = 1
COMPACT_FIELDS: Final[tuple[str, ...]] = (
    "name", "test", "statistic", "p_value", "adjusted_p_value", "rejected")
"""The per-feature figures a window that raised nothing keeps."""
SIGNIFICANT_DIGITS: Final = 4


def stored_features(features: Sequence[Mapping[str, Any]], rejected: bool) -> dict[str, Any]:
    """What goes into the ``features`` column for a report with these features.

    Each feature is a row: the whole dict for a feature that moved in a window that alarmed
    (the detail an incident points at), else an array of `COMPACT_FIELDS` values.
    """
    rows: list[Any] = [
        dict(feature) if rejected and feature.get("rejected")
        else [_compact_value(feature.get(field)) for field in COMPACT_FIELDS]
        for feature in features
    ]
    return {"compact": COMPACT_VERSION, "fields": list(COMPACT_FIELDS), "rows": rows}


def read_features(stored: Any) -> list[dict[str, Any]]:
    """The ``features`` column as a list of per-feature dicts, whichever way it was stored.

    Reports written before compaction hold the list itself. A compact row leaves out the
    fields the detector did not report (``None``), so a feature reads back with the keys it
    was written with, less the detail a quiet feature drops.
    """
    if not isinstance(stored, Mapping):
        return list(stored or [])
    fields = stored.get("fields") or []
    return [dict(row) if isinstance(row, Mapping)
            else {field: value for field, value in zip(fields, row, strict=False)
                  if value is not None}
            for row in stored.get("rows") or []]


def _compact_value(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    return value
