"""Adversarial images in a replayed MNIST stream become ``adversarial`` incidents.

The agent is configured like examples/mnist/agent.yaml (one 28x28 tensor feature, the
``adversarial`` detector) but with a small model so the test stays fast: it bootstraps on
labelled MNIST images, an attacker crafts PGD images against the very model it serves, and
the replay must flag the crafted images while flagging clean images at no more than the
calibrated rate. One incident per flagged record (``group_span_records: 1``) lets the test
match every incident to its line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.config import parse_config
from agent.service import Agent
from detectors.checks import false_alarm_budget
from tests.integration.live_stream import replay

pytestmark = [pytest.mark.data, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist" / "agent.yaml"
ALPHA = 0.01


@pytest.fixture(scope="module")
def split() -> object:
    from bench import mnist_data

    try:
        return mnist_data.load_mnist_split()
    except FileNotFoundError as error:
        pytest.skip(f"MNIST t10k is missing ({error}); set METASENTRY_DATA to the data root")


def _config(tmp_path: Path, reference: Path, stream: Path) -> str:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["reference"]["path"] = str(reference)
    data["sources"][0]["path"] = str(stream)
    data["storage"]["url"] = f"sqlite:///{tmp_path / 'mnist.db'}"
    data["model"].update(cache_dir=str(tmp_path / "models"), device="cpu", encoder="mlp",
                         training_episodes=400, learner="protonet")
    data["incidents"] = {"group_span_records": 1}
    data["detectors"][0]["alpha"] = ALPHA
    return yaml.safe_dump(data)


def _line_of_offsets(path: Path) -> dict[int, int]:
    starts, position = {}, 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle):
            starts[position] = number
            position += len(line)
    return starts


def test_replayed_mnist_stream_flags_adversarial_images(tmp_path: Path, split: object) -> None:
    from bench.adversarial_stream import write_adversarial_stream, write_reference
    from bench.mnist_data import MnistPart

    def head(part: MnistPart, n: int, start: int = 0) -> MnistPart:
        rows = slice(start, start + n)
        return MnistPart(x=part.x[rows], y=part.y[rows], index=part.index[rows])

    reference = write_reference(tmp_path / "reference.jsonl",
                                [head(split.train, 2500), split.detector])  # type: ignore[attr-defined]
    stream_path = tmp_path / "stream.jsonl"
    stream_path.write_text("")
    config = parse_config(_config(tmp_path, reference, stream_path), base_dir=tmp_path)
    agent = Agent(config)
    try:
        agent.prepare()
        test = split.test  # type: ignore[attr-defined]
        crafted = write_adversarial_stream(agent, stream_path, head(test, 1500),
                                           head(test, 150, start=1500), attacks={"pgd": 0.3})
        assert crafted.success["pgd"] >= 0.9, crafted.success
        totals = replay(agent, config, stream_path, "mnist")
        assert totals.processed == len(crafted.truths)
        incidents = agent.store.list_incidents(kind="adversarial", limit=10_000)
    finally:
        agent.close()

    lines = _line_of_offsets(stream_path)
    flagged = [lines[int(i.offset_key.rpartition(":")[2])] for i in incidents]
    truths = np.array(crafted.truths)
    adversarial = int((truths == "adversarial").sum())
    caught = sum(truths[line] == "adversarial" for line in flagged)
    false_alarms = sum(truths[line] == "clean" for line in flagged)
    assert caught >= 0.9 * adversarial, f"{caught} of {adversarial} adversarial images flagged"
    assert false_alarms <= false_alarm_budget(int((truths == "clean").sum()), ALPHA)
    first = incidents[-1]
    assert first.severity == "high" and first.model_version
    assert first.explanation["first_record"]["fired"]
    assert first.explanation["first_record"]["nearest_clean"]
