"""Meta-learning core: episodes, functional encoders, few-shot learners, open-set scoring, saving.

The agent adapts its alert classifier from a handful of analyst labels; this package provides
the learners that make that possible (ProtoNet, MAML, FOMAML, Meta-SGD, a memory learner), the
episodic training that prepares them, and a pickle-free, hash-verified model format.
Import submodules directly (``from meta.learners import build_learner``); this package's
``__init__`` stays light so that importing ``meta`` does not load TensorFlow.
"""

from __future__ import annotations
