"""``metasentry meta-train`` and ``metasentry fewshot-eval``: the meta-learning commands.

meta-train prepares the few-shot alert classifier on labelled data described by the config's
schema (by default the reference file), holding out whole classes for validation and early
stopping, and writes a verifiable model directory; re-running with the same ``--out`` resumes
an interrupted run. fewshot-eval measures N-way K-shot accuracy, with a 95% confidence
interval, on classes the model never saw, which is the number that says whether the model will
adapt to the next new attack type from a few analyst labels.

The commands are registered on the main ``metasentry`` group by ``agent.cli``; they do not
import it (that module imports this one).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import orjson

from agent.cli_common import EXIT_CONFIG, load_or_exit
from agent.config import AgentConfig
from agent.datafile import file_sha256, read_records
from agent.schema import Encoder
from agent.training import ProgressLog, TrainingPlan, train_learner

log = logging.getLogger(__name__)

ALGORITHM_CHOICES = ("protonet", "maml", "fomaml", "metasgd", "memory")
CHECKPOINT_SUBDIR = "checkpoint"


@dataclass(frozen=True)
class LabelledData:
    """Encoded records of a labelled file: features, labels, and where they came from."""

    x: np.ndarray
    y: np.ndarray
    encoder: Encoder
    path: Path
    sha256: str
    skipped: int


def _load_config_or_exit(path: Path) -> AgentConfig:
    config = load_or_exit(path)
    if not config.schema.label:
        click.echo("error: schema.label: the meta-learning commands need a label field", err=True)
        sys.exit(EXIT_CONFIG)
    return config


def _read_labelled(
    config: AgentConfig, path: Path, header: bool, encoder: Encoder | None
) -> LabelledData:
    """Read and encode a labelled CSV/JSONL file; fit a new encoder unless one is given."""
    columns = config.schema.columns
    if not header and columns is None:
        raise click.UsageError("a headerless CSV needs `schema.columns` in the config")
    data = read_records(path, columns=columns, header=header)
    if not data.records:
        raise click.ClickException(f"{path}: no readable records")
    if encoder is None:
        encoder = Encoder.from_config(config.schema).fit(data.records, textual=data.textual)
    encoded = encoder.encode(data.records, textual=data.textual)
    labels = encoded.labels
    if labels is None:
        raise click.ClickException("the schema names no label field")
    labelled = np.array([label is not None and label != "" for label in labels], dtype=bool)
    skipped = len(data.records) - int(labelled.sum())
    if not labelled.any():
        first = encoded.errors[0].detail if encoded.errors else "no label"
        raise click.ClickException(
            f"{path}: none of {len(data.records)} records could be encoded with a label "
            f"(first problem: {first}); check the file against the config's schema"
        )
    if skipped:
        log.warning("%s: %d records skipped (unencodable or unlabelled)", path, skipped)
    return LabelledData(
        x=encoded.x[labelled],
        y=labels[labelled].astype(str),
        encoder=encoder,
        path=path,
        sha256=file_sha256(path),
        skipped=skipped,
    )


def _header_for(config: AgentConfig, data: Path | None, header: bool | None) -> bool:
    if header is not None:
        return header
    if data is None:
        return config.reference.header
    return config.schema.columns is None


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"expected positive integers, got {text!r}")
    return values


def _members(algorithm: str, members: int) -> int:
    """``--members``, checked against the algorithm before any training time is spent."""
    if members > 1 and algorithm != "memory":
        raise click.BadParameter(f"only the memory learner has members, not {algorithm}.",
                                 param_hint="--members")
    return members


@click.command("meta-train")
@click.option("--config", "config_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False), help="The agent's YAML config.")
@click.option("--data", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              default=None, help="Labelled CSV/JSONL file [default: the config's reference].")
@click.option("--header/--no-header", default=None,
              help="Whether --data has a header row [default: no header when schema.columns].")
@click.option("--algorithm", type=click.Choice(ALGORITHM_CHOICES), default="protonet",
              show_default=True)
@click.option("--episodes", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Training episodes (tasks) in total.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Model directory; re-running with the same directory resumes.")
@click.option("--ways", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--shots", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--meta-batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--val-classes", type=click.IntRange(min=2), default=3, show_default=True,
              help="Classes held out of training for validation and early stopping.")
@click.option("--benign-class", default=None,
              help="A class (e.g. normal) always kept for training, never held out.")
@click.option("--val-every", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training episodes between validations (and checkpoints).")
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--hidden", default="256,128", show_default=True, help="MLP hidden sizes.")
@click.option("--embedding-dim", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--members", type=click.IntRange(min=1, max=16), default=1, show_default=True,
              help="memory only: an ensemble of this many members, read as one memory.")
@click.option("--seed", type=int, default=0, show_default=True)
def meta_train(
    config_path: Path,
    data: Path | None,
    header: bool | None,
    algorithm: str,
    episodes: int,
    out_dir: Path,
    ways: int,
    shots: int,
    queries: int,
    meta_batch: int,
    val_classes: int,
    benign_class: str | None,
    val_every: int,
    patience: int,
    hidden: str,
    embedding_dim: int,
    members: int,
    seed: int,
) -> None:
    """Meta-train a few-shot alert classifier on labelled data and save it to --out."""
    from meta.saving import SIGNING_KEY_ENV, save_learner

    config = _load_config_or_exit(config_path)
    signing_key = _signing_key_or_fail()  # before training: a bad key must not cost a run
    hidden_sizes = _ints(hidden)
    path = data if data is not None else config.resolve(config.reference.path)
    labelled = _read_labelled(config, path, _header_for(config, data, header), encoder=None)
    plan = TrainingPlan(algorithm=algorithm, episodes=episodes, ways=ways, shots=shots,
                        queries=queries, meta_batch=meta_batch, val_classes=val_classes,
                        benign_class=benign_class, val_every=val_every, patience=patience,
                        hidden=hidden_sizes, embedding_dim=embedding_dim, seed=seed,
                        device=config.model.device, members=_members(algorithm, members))
    click.echo(f"{len(labelled.y)} records, {labelled.x.shape[1]} features; training "
               f"{algorithm} for {episodes} episodes", err=True)
    try:
        trained = train_learner(labelled.x, labelled.y, plan,
                                checkpoint_dir=out_dir / CHECKPOINT_SUBDIR,
                                progress=ProgressLog(lambda line: click.echo(line, err=True)))
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    learner, history, split = trained.learner, trained.history, trained.split
    click.echo(
        f"training classes {list(split.train)}, validation classes {list(split.val)}"
        + (f", excluded (too few records) {list(split.excluded)}" if split.excluded else ""),
        err=True,
    )
    description = {
        "feature_schema": config.schema.model_dump(mode="json"),
        "encoder_state": labelled.encoder.state_dict(),
        "label_field": config.schema.label,
        "training_data": {"path": str(path), "sha256": labelled.sha256,
                          "records": int(len(labelled.y))},
        **trained.description,
    }
    digest = save_learner(learner, out_dir, description=description, signing_key=signing_key)
    best = history.best_val_accuracy
    signed = f", signed with {SIGNING_KEY_ENV}" if signing_key is not None else ""
    click.echo(
        f"saved {algorithm} model to {out_dir} (sha256 {digest}{signed}); {history.episodes_run} "
        f"episodes, best validation accuracy "
        f"{'n/a' if best is None else f'{best:.3f}'}"
        + (" (stopped early)" if history.stopped_early else "")
    )


@click.command("fewshot-eval")
@click.option("--config", "config_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False), help="The agent's YAML config.")
@click.option("--model", "model_dir", required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--data", required=True, type=click.Path(path_type=Path, exists=True,
                                                       dir_okay=False))
@click.option("--sha256", "expected_sha256", default=None, metavar="HEX",
              callback=lambda _ctx, _param, value: _pinned_sha256(value),
              help="Refuse the model unless its sha256 (printed by meta-train) is this one.")
@click.option("--header/--no-header", default=None,
              help="Whether --data has a header row [default: no header when schema.columns].")
@click.option("--ways", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--shots", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--episodes", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--classes", default=None,
              help="Comma-separated classes [default: every class the model never saw].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fewshot_eval(
    config_path: Path,
    model_dir: Path,
    data: Path,
    expected_sha256: str | None,
    header: bool | None,
    ways: int,
    shots: int,
    queries: int,
    episodes: int,
    classes: str | None,
    seed: int,
    as_json: bool,
) -> None:
    """N-way K-shot accuracy (95% CI) of a saved model on classes it never saw.

    With METASENTRY_MODEL_KEY set, the model's manifest signature is verified (an unsigned
    model is refused); --sha256 pins the model itself.
    """
    from meta.episodes import EpisodeSampler
    from meta.saving import ModelIntegrityError, load_model

    config = _load_config_or_exit(config_path)
    signing_key = _signing_key_or_fail()
    try:
        loaded = load_model(model_dir, expected_sha256=expected_sha256, signing_key=signing_key,
                            device=config.model.device)
    except ModelIntegrityError as error:
        raise click.ClickException(str(error)) from error
    learner = loaded.learner
    state = loaded.model["description"].get("encoder_state")
    if state is None:
        raise click.ClickException(f"{model_dir}: the model carries no encoder state")
    labelled = _read_labelled(config, data, _header_for(config, data, header),
                              encoder=Encoder.from_state(state))
    seen = {str(c) for c in learner.seen_classes}
    if classes is not None:
        wanted = [c.strip() for c in classes.split(",") if c.strip()]
        overlap = sorted(set(wanted) & seen)
        if overlap:
            log.warning("evaluating on classes the model was trained on: %s", overlap)
    else:
        wanted = sorted(set(labelled.y.tolist()) - seen)
    try:
        sampler = EpisodeSampler(labelled.x, labelled.y, ways=ways, shots=shots, queries=queries,
                                 seed=seed, classes=wanted)
    except ValueError as error:
        raise click.ClickException(str(error)) from error

    started = time.perf_counter()
    accuracies = np.empty(episodes)
    for i in range(episodes):  # one adaptation per episode; the episode count is small
        episode = sampler.sample()
        adapted = learner.adapt(episode.support_x, episode.support_y)
        accuracies[i] = np.mean(adapted.predict(episode.query_x) == episode.query_y)
    spread = float(accuracies.std(ddof=1)) if episodes > 1 else 0.0
    accuracy = float(accuracies.mean())
    ci95 = float(1.96 * spread / np.sqrt(episodes))
    result: dict[str, Any] = {
        "model": str(model_dir),
        "sha256": loaded.sha256,
        "signature_verified": loaded.signature_verified,
        "algorithm": learner.algorithm,
        "data": str(data),
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "episodes": episodes,
        "classes": list(sampler.classes),
        "excluded": list(sampler.excluded),
        "accuracy": accuracy,
        "ci95": ci95,
        "seconds": time.perf_counter() - started,
    }
    if as_json:
        click.echo(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(
        f"{learner.algorithm} {ways}-way {shots}-shot on {len(sampler.classes)} unseen classes: "
        f"accuracy {100 * accuracy:.2f}% ± {100 * ci95:.2f} "
        f"(95% CI, {episodes} episodes)"
    )


def _pinned_sha256(value: str | None) -> str | None:
    """--sha256 as a lower-case digest; a value that is not 64 hex characters is a usage error."""
    if value is None:
        return None
    from meta.saving import parse_sha256

    try:
        return parse_sha256(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _signing_key_or_fail() -> bytes | None:
    """The manifest signing key from METASENTRY_MODEL_KEY, or None; a weak key is an error."""
    from meta.saving import signing_key_from_env

    try:
        return signing_key_from_env()
    except ValueError as error:
        raise click.ClickException(str(error)) from None
