"""Session fixtures of the meta-learning tests (the data helpers live in meta_testdata.py)."""

from __future__ import annotations

from meta_testdata import nsl_sample, trained_learners

__all__ = ["nsl_sample", "trained_learners"]
