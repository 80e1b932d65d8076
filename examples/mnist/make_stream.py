"""Build the MNIST walkthrough: a labelled reference, the live model, and an attacked stream.

Run from the repository root (after `make run` or `make test` set up .venv)::

    .venv/bin/python examples/mnist/make_stream.py

MNIST t10k (../shared/data/mnist, or $METASENTRY_DATA/mnist) is split with a fixed seed into
5,000 training, 2,000 detector and 3,000 test images (bench/mnist_data.py). The first two
parts form the reference (var/mnist/reference.jsonl): the agent meta-trains its Conv-4 model on
80 % of it and calibrates the adversarial detector on the 20 % the model never sees. The
stream (var/mnist/stream.jsonl) holds 2,700 clean test images and, mixed in, adversarial
versions of the other 300 crafted against the model the agent serves (PGD L-infinity 0.3 and
FGSM 0.1; only those that fool it); each line's `truth` field says which is which (the agent
ignores it). Then replay it::

    .venv/bin/metasentry replay --config examples/mnist/agent.yaml var/mnist/stream.jsonl
    .venv/bin/metasentry incidents list --config examples/mnist/agent.yaml --kind adversarial
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.config import load_config  # noqa: E402
from agent.service import Agent  # noqa: E402
from bench.adversarial_stream import write_adversarial_stream, write_reference  # noqa: E402
from bench.mnist_data import MnistPart, load_mnist_split  # noqa: E402

CONFIG = ROOT / "examples" / "mnist" / "agent.yaml"
DATA = ROOT / "var" / "mnist"  # where agent.yaml's reference and source paths point
VICTIMS = 300


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    split = load_mnist_split()
    reference = write_reference(DATA / "reference.jsonl", [split.train, split.detector])
    print(f"reference: {reference} ({len(split.train) + len(split.detector)} images)")
    stream = DATA / "stream.jsonl"
    stream.write_text("")  # the configuration checks its source exists
    agent = Agent(load_config(CONFIG))
    try:
        agent.prepare()  # bootstraps (or loads) the live model: what the attacker targets
        test = split.test
        clean = MnistPart(x=test.x[VICTIMS:], y=test.y[VICTIMS:], index=test.index[VICTIMS:])
        victims = MnistPart(x=test.x[:VICTIMS], y=test.y[:VICTIMS], index=test.index[:VICTIMS])
        crafted = write_adversarial_stream(agent, stream, clean, victims,
                                           attacks={"pgd": 0.3, "fgsm": 0.1})
    finally:
        agent.close()
    rates = ", ".join(f"{name} {rate:.0%} fooled the model" for name, rate in
                      crafted.success.items())
    print(f"stream: {stream} ({len(clean)} clean images, {sum(crafted.attacks.values())} "
          f"adversarial: {rates})")


if __name__ == "__main__":
    main()
