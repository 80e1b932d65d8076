"""Real NSL-KDD records arranged into the streams the live-model tests need.

Every record comes from the bundled sample (examples/nsl-kdd/stream.csv.gz, drawn from
KDDTest+); its last-but-one column is its true class, which the tests use as the analyst's
answer and as ground truth.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from agent.config import AgentConfig
from agent.datafile import open_file_source
from agent.service import Agent, RunTotals

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nsl-kdd"


def sample_lines() -> list[str]:
    with gzip.open(SAMPLE / "stream.csv.gz", "rt") as handle:
        return handle.read().splitlines()


def true_class(line: str) -> str:
    return line.split(",")[-2]


def of_class(lines: Iterable[str], label: str) -> list[str]:
    return [line for line in lines if true_class(line) == label]


def interleave(benign: Sequence[str], other: Sequence[str], seed: int = 0) -> list[str]:
    """``other`` records scattered at random places among ``benign`` ones (order kept)."""
    rng = np.random.default_rng(seed)
    slots = np.sort(rng.choice(len(benign) + len(other), len(other), replace=False))
    out: list[str] = []
    b = o = 0
    for position in range(len(benign) + len(other)):
        if o < len(other) and position == slots[o]:
            out.append(other[o])
            o += 1
        else:
            out.append(benign[b])
            b += 1
    return out


def write_stream(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def replay(agent: Agent, config: AgentConfig, path: Path, name: str) -> RunTotals:
    """Push one finite file through the agent's pipeline as source ``name``."""
    source = open_file_source(name, path, columns=config.schema.columns, header=False,
                              max_record_bytes=config.schema.max_record_bytes)
    agent.sources = []
    agent.attach(source)
    agent.stop_event.clear()
    return agent.run_sources(stop_when_exhausted=True)


def served_answers(agent: Agent, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, alarm) of the model serving now, for each of ``lines``."""
    import csv
    import io

    assert agent.runtime is not None and agent.encoder is not None
    columns = agent.config.schema.columns
    assert columns is not None
    records = [dict(zip(columns, row, strict=True))
               for row in csv.reader(io.StringIO("\n".join(lines)))]
    encoded = agent.encoder.encode(records, textual=True)
    model = agent.runtime.current()
    assert model is not None
    out = model.classify(encoded.x)
    predicted = out.predicted.astype(str)
    alpha = agent.config.model.novel_false_alarm_rate
    alarm = out.novel(alpha) | (predicted != model.benign_class)
    return predicted, alarm


def incident_with_examples(agent: Agent, lines: Sequence[str], key: str,
                           source: str = "test") -> int:
    """Store ``lines`` as the example records of one novel incident; returns its id.

    What an analyst can label: the tests use it to put chosen real records in front of the
    labelling interfaces without depending on which records the model happens to flag.
    """
    from storage import IncidentExample, NewIncident

    assert agent.encoder is not None and agent.config.schema.columns is not None
    fields = [dict(zip(agent.config.schema.columns, line.split(","), strict=True))
              for line in lines]
    x = agent.encoder.encode(fields, textual=True).x
    result = agent.store.commit_batch(
        source=source, position=None,
        incidents=[NewIncident(kind="novel", severity="medium", source=source, offset_key=key,
                               detector="classifier")],
        examples=[IncidentExample(source=source, incident_offset_key=key, detector="classifier",
                                  offset_key=f"{key}:{i}", ordinal=i, fields=f, textual=True,
                                  features=x[i].tolist()) for i, f in enumerate(fields)])
    return result.created_ids[0]
