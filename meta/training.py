"""The episodic meta-training loop: validation on held-out classes, early stopping, checkpoints.

Meta-learners overfit their few training classes quickly, so the only trustworthy stopping
signal is accuracy on episodes of classes never trained on; the loop evaluates a *fixed* set of
validation episodes (so successive scores are comparable), keeps the best weights and stops
after ``patience`` evaluations without improvement. Training on a CPU can take long and be
interrupted, so the complete state — weights, optimizer slots, best weights, history and the
samplers' generator states — is written atomically to one ``.npz`` (no pickle) and a rerun with
the same directory resumes exactly where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meta.episodes import EpisodeBatch, EpisodeSampler
from meta.learners.base import TrainHistory, TrainProgress

if TYPE_CHECKING:
    from collections.abc import Callable

    from meta.learners.base import EpisodicLearner

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.npz"


class CheckpointMismatchError(ValueError):
    """A checkpoint directory holds a run with a different learner or episode configuration."""


@dataclass
class _LoopState:
    step: int = 0
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_step: int | None = None
    best_val_accuracy: float | None = None
    checks_without_improvement: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def run_meta_training(
    learner: EpisodicLearner,
    train: EpisodeSampler,
    *,
    episodes: int,
    meta_batch: int,
    val: EpisodeSampler | None,
    val_every: int,
    patience: int,
    checkpoint_dir: Path | None,
    progress: Callable[[TrainProgress], None] | None,
    val_tasks: int = 64,
) -> TrainHistory:
    """Meta-train ``learner`` for ``episodes`` tasks in meta-batches of ``meta_batch``.

    ``val_every`` counts training episodes between validations (and checkpoints); ``patience``
    counts validations without improvement before stopping early.
    """
    if meta_batch < 1:
        raise ValueError(f"meta_batch must be at least 1, got {meta_batch}.")
    if episodes < meta_batch:
        raise ValueError(f"episodes ({episodes}) must be at least meta_batch ({meta_batch}).")
    if val_every < 1 or patience < 1 or val_tasks < 1:
        raise ValueError("val_every, patience and val_tasks must be positive.")
    steps_total = episodes // meta_batch
    check_every = max(1, val_every // meta_batch)
    fingerprint = _fingerprint(learner, train, val, meta_batch)
    val_state = val.get_state() if val is not None else None

    state = _LoopState()
    best_arrays: dict[str, np.ndarray] | None = None
    checkpoint = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if checkpoint is not None and checkpoint.exists():
        state, best_arrays, val_state = _restore(checkpoint, learner, train, fingerprint)
        logger.info("resuming meta-training from step %d (%s)", state.step, checkpoint)
    resumed_from = state.step

    val_batches = _fixed_validation(val, val_state, val_tasks, meta_batch)
    started = time.monotonic()
    seconds_before = state.seconds
    while state.step < steps_total and not state.stopped_early:
        loss, accuracy = learner.train_step(train.sample_batch(meta_batch))
        state.step += 1
        state.train_loss.append(loss)
        state.train_accuracy.append(accuracy)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"meta-training loss became {loss} at step {state.step}; lower meta_lr "
                "(or inner_lr for gradient-based learners)."
            )
        val_accuracy = None
        boundary = state.step % check_every == 0 or state.step == steps_total
        if val_batches and boundary:
            val_accuracy = _validate(learner, val_batches, state, patience)
            if state.best_step == state.step:
                best_arrays = learner.state_arrays()
        state.seconds = seconds_before + time.monotonic() - started
        if checkpoint is not None and (boundary or state.stopped_early):
            _save(checkpoint, learner, train, state, best_arrays, fingerprint, val_state)
        if progress is not None:
            progress(_progress(state, steps_total, meta_batch, val_accuracy, started, resumed_from))

    if best_arrays is not None:
        learner.load_state_arrays(best_arrays)
    seen = set(train.all_classes) | (set(val.all_classes) if val is not None else set())
    learner.seen_classes = tuple(sorted(seen, key=str))
    learner.metrics.update(
        {
            "meta_steps": state.step,
            "meta_batch": meta_batch,
            "best_val_accuracy": state.best_val_accuracy,
            "final_train_loss": state.train_loss[-1] if state.train_loss else None,
            "ways": train.ways,
            "shots": train.shots,
        }
    )
    return TrainHistory(
        algorithm=learner.algorithm,
        steps_run=state.step,
        episodes_run=state.step * meta_batch,
        train_loss=tuple(state.train_loss),
        train_accuracy=tuple(state.train_accuracy),
        val_steps=tuple(state.val_steps),
        val_loss=tuple(state.val_loss),
        val_accuracy=tuple(state.val_accuracy),
        best_step=state.best_step,
        best_val_accuracy=state.best_val_accuracy,
        stopped_early=state.stopped_early,
        resumed_from_step=resumed_from,
        seconds=state.seconds,
    )


def _fixed_validation(
    val: EpisodeSampler | None, val_state: dict[str, Any] | None, tasks: int, meta_batch: int
) -> list[EpisodeBatch]:
    """The same validation episodes at every check (drawn from the sampler's initial state)."""
    if val is None or val_state is None:
        return []
    val.set_state(val_state)
    chunks = max(1, -(-tasks // meta_batch))
    return [val.sample_batch(meta_batch) for _ in range(chunks)]


def _validate(
    learner: EpisodicLearner, batches: list[EpisodeBatch], state: _LoopState, patience: int
) -> float:
    results = np.array([learner.evaluate_batch(batch) for batch in batches])
    val_loss, val_accuracy = (float(v) for v in results.mean(axis=0))
    state.val_steps.append(state.step)
    state.val_loss.append(val_loss)
    state.val_accuracy.append(val_accuracy)
    if state.best_val_accuracy is None or val_accuracy > state.best_val_accuracy:
        state.best_val_accuracy = val_accuracy
        state.best_step = state.step
        state.checks_without_improvement = 0
    else:
        state.checks_without_improvement += 1
        if state.checks_without_improvement >= patience:
            state.stopped_early = True
            logger.info(
                "early stop at step %d: no validation improvement in %d checks (best %.4f at %d)",
                state.step,
                patience,
                state.best_val_accuracy,
                state.best_step,
            )
    logger.info("step %d: validation accuracy %.4f loss %.4f", state.step, val_accuracy, val_loss)
    return val_accuracy


def _progress(
    state: _LoopState,
    steps_total: int,
    meta_batch: int,
    val_accuracy: float | None,
    started: float,
    resumed_from: int,
) -> TrainProgress:
    elapsed = time.monotonic() - started
    done_now = max(state.step - resumed_from, 1)
    return TrainProgress(
        step=state.step,
        steps_total=steps_total,
        episodes_done=state.step * meta_batch,
        episodes_total=steps_total * meta_batch,
        loss=state.train_loss[-1],
        accuracy=state.train_accuracy[-1],
        val_accuracy=val_accuracy,
        best_val_accuracy=state.best_val_accuracy,
        elapsed_s=state.seconds,
        eta_s=elapsed / done_now * (steps_total - state.step),
    )


def _fingerprint(
    learner: EpisodicLearner, train: EpisodeSampler, val: EpisodeSampler | None, meta_batch: int
) -> dict[str, Any]:
    return {
        "algorithm": learner.algorithm,
        "encoder": learner.encoder_spec.to_dict(),
        "hyperparameters": learner.hyperparameters(),
        "ways": train.ways,
        "shots": train.shots,
        "query_size": train.query_size,
        "meta_batch": meta_batch,
        "train_classes": [str(c) for c in train.all_classes],
        "val_classes": [str(c) for c in val.all_classes] if val is not None else None,
    }


def _save(
    path: Path,
    learner: EpisodicLearner,
    train: EpisodeSampler,
    state: _LoopState,
    best_arrays: dict[str, np.ndarray] | None,
    fingerprint: dict[str, Any],
    val_state: dict[str, Any] | None,
) -> None:
    meta = {
        "fingerprint": fingerprint,
        "loop": asdict(state),
        "train_sampler": train.get_state(),
        "val_sampler": val_state,
        "has_best": best_arrays is not None,
    }
    arrays: dict[str, np.ndarray] = {"meta_json": np.asarray(json.dumps(meta))}
    arrays.update({f"weights/{k}": v for k, v in learner.state_arrays().items()})
    arrays.update({f"optimizer/{k}": v for k, v in learner.optimizer_state().items()})
    if best_arrays is not None:
        arrays.update({f"best/{k}": v for k, v in best_arrays.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, path)


def _restore(
    path: Path, learner: EpisodicLearner, train: EpisodeSampler, fingerprint: dict[str, Any]
) -> tuple[_LoopState, dict[str, np.ndarray] | None, dict[str, Any] | None]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta_json"]))
        stored = _normalise(meta["fingerprint"])
        if stored != _normalise(fingerprint):
            current = _normalise(fingerprint)
            differing = sorted(k for k in current if stored.get(k) != current[k])
            raise CheckpointMismatchError(
                f"checkpoint {path} was written by a different configuration (differs in "
                f"{differing}); use a new output directory or the original settings."
            )
        sections: dict[str, dict[str, np.ndarray]] = {"weights": {}, "optimizer": {}, "best": {}}
        for key in data.files:
            section, _, name = key.partition("/")
            if section in sections:
                sections[section][name] = data[key]
    learner.load_state_arrays(sections["weights"])
    learner.load_optimizer_state(sections["optimizer"])
    train.set_state(meta["train_sampler"])
    best = sections["best"] if meta["has_best"] else None
    return _LoopState(**meta["loop"]), best, meta["val_sampler"]


def _normalise(value: Any) -> Any:
    """JSON round trip, so tuples and lists (and numpy scalars) compare equal."""
    return json.loads(json.dumps(value, default=str))
