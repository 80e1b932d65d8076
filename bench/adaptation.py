"""The analyst loop, measured: alarms and naming on a real stream, label → serving latency,
what a few labels teach, and poisoned labelling campaigns.

Run from the repository root::

    nice -n 10 .venv/bin/python -m bench.adaptation            # about 15 minutes on 2 cores
    nice -n 10 .venv/bin/python -m bench.adaptation --quick    # a few minutes

Sections (protocols in bench/live_loop.py and below; every learner and baseline sees the same
records, the same encoding and the same labels):

1. **Stream loop**: KDDTest+ in file order, the analyst labels the first N alarms; the agent's
   loop (memory, knn) side by side with the 1-NN and extra-trees baseline loops.
2. **Few labels**: recall on a newly labelled type after 1, 5 and 10 labels and the benign
   false-alarm rate, against 1-NN on raw features and a retrained logistic head and extra
   trees.
3. **Label → serving**: through the agent's own code (store, screening, enrolment, canary,
   registry, hot swap, then the first batch scored by the new version), per learner, on CPU.
4. **Poisoned campaigns**: 30% wrong labels (benign records labelled as the new class, new-class
   records labelled benign, a random labeller) over several seeds: labels held, versions
   activated or rejected, and the served model on held-out traffic.

Outputs in ``--out`` (default docs/bench): adaptation.json, adaptation.md, adaptation.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.live_loop import (
    BENIGN,
    AlertModel,
    default_config,
    few_label_recall,
    load,
    model_loop,
    nearest_neighbour_loop,
    trees_loop,
)
from bench.machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "nsl-kdd"
NEW_TYPE = "apache2"
LEARNERS = ("knn", "memory", "protonet", "fomaml", "maml", "metasgd")
ENSEMBLE = 3  # the memory learner's opt-in ensemble (model.members), measured beside it

log = logging.getLogger("bench.adaptation")


def _machine() -> dict[str, Any]:
    import os

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}


# --- 1 and 2: the model-level loops ------------------------------------------------------------


def stream_and_few_labels(budgets: Sequence[int], episodes: int) -> dict[str, Any]:
    from agent.training import TrainingPlan, train_learner

    config = default_config(REPO)
    _, split, stream = load(config)
    print(f"stream {stream.name}: {len(stream.y)} records, {int(stream.novel.sum())} of "
          f"novel types; enrolment {len(split.support)} labelled reference records", flush=True)

    def memory(members: int) -> AlertModel:
        trained = train_learner(split.support.x, split.support.y, TrainingPlan(
            algorithm="memory", episodes=episodes, benign_class=BENIGN, device="cpu",
            members=members))
        return AlertModel.build("memory", trained.learner, split.support, benign_class=BENIGN)

    default = memory(1)
    ensemble = memory(ENSEMBLE)
    knn = AlertModel.build("knn", None, split.support, benign_class=BENIGN)
    models = {
        "memory (agent default, one member)": default,
        f"memory, {ENSEMBLE} members (model.members: {ENSEMBLE})": ensemble,
        "knn (agent, nothing meta-learned)": knn,
    }
    loops = []
    for budget in budgets:
        for baseline in (nearest_neighbour_loop, trees_loop):
            result = baseline(split.support, stream, budget, time.perf_counter)
            loops.append(result.as_dict())
            print(f"  {result}", flush=True)
        for name, model in models.items():
            result = model_loop(model, stream, budget, name, time.perf_counter)
            loops.append(result.as_dict())
            print(f"  {result}", flush=True)
    few = [r.__dict__ for r in few_label_recall(default, split.support, stream,
                                                name="memory (agent, one member)")]
    for name, model in ((f"memory (agent, {ENSEMBLE} members)", ensemble),
                        ("knn (agent)", knn)):
        few += [r.__dict__ for r in few_label_recall(model, split.support, stream, name=name,
                                                     baselines=False)]
    for row in few:
        print(f"  few labels: {row}", flush=True)
    return {"stream": stream.name, "records": len(stream.y), "loops": loops, "few_labels": few}


# --- 3: label -> serving through the agent ----------------------------------------------------


def _agent_config(tmp: Path, learner: str, episodes: int, members: int | None = None) -> Any:
    from agent.config import parse_config

    data = yaml.safe_load((REPO / "agent.yaml").read_text())
    data["reference"]["path"] = str(SAMPLE / "reference.csv.gz")
    data["sources"][0]["path"] = str(SAMPLE / "stream.csv.gz")
    data["storage"]["url"] = f"sqlite:///{tmp / 'bench.db'}"
    data["metrics"]["enabled"] = data["api"]["enabled"] = False
    data["logging"]["level"] = "WARNING"
    data["model"].update(learner=learner, training_episodes=episodes, device="cpu",
                         cache_dir=str(tmp / "models"))
    if members is not None:
        data["model"]["members"] = members
    return parse_config(yaml.safe_dump(data), base_dir=REPO)


def _stream_lines() -> list[str]:
    import gzip

    with gzip.open(SAMPLE / "stream.csv.gz", "rt") as handle:
        return handle.read().splitlines()


def _examples(agent: Any, lines: list[str], name: str) -> int:
    from storage import IncidentExample, NewIncident

    columns = agent.config.schema.columns
    fields = [dict(zip(columns, line.split(","), strict=True)) for line in lines]
    encoded = agent.encoder.encode(fields, textual=True)
    examples = [IncidentExample(source="bench", incident_offset_key=name, detector="classifier",
                                offset_key=f"{name}:{i}", ordinal=i, fields=f, textual=True,
                                features=encoded.x[i].tolist()) for i, f in enumerate(fields)]
    result = agent.store.commit_batch(
        source="bench", position=None, examples=examples,
        incidents=[NewIncident(kind="novel", severity="medium", source="bench", offset_key=name,
                               detector="classifier")])
    return int(result.created_ids[0])


def label_to_serving(learner: str, rounds: int, episodes: int, members: int | None = None
                     ) -> dict[str, Any]:
    """Label five records, adapt, and score the next batch with the new version: per round.
    ``members`` overrides the memory learner's ensemble size (the agent's default otherwise)."""
    from agent.datafile import open_file_source
    from agent.service import Agent

    lines = _stream_lines()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = _agent_config(tmp, learner, episodes, members)
        started = time.perf_counter()
        agent = Agent(config)
        agent.prepare()
        startup = time.perf_counter() - started
        batch_file = tmp / "batch.csv"
        batch_file.write_text("\n".join(lines[:500]) + "\n")
        durations, adapt_only, statuses = [], [], []
        # Records of the attack types the reference never holds, five of one type per round
        # (cycling through the types), labelled with their true class, as an analyst would.
        known = set(agent.runtime.current().classes)
        by_type: dict[str, list[str]] = {}
        for line in lines:
            label = line.split(",")[-2]
            if label not in known:
                by_type.setdefault(label, []).append(line)
        types = sorted(t for t, found in by_type.items() if len(found) >= 5 * rounds)
        pool = [line for i in range(rounds)
                for line in by_type[types[i % len(types)]][5 * (i // len(types)):][:5]]
        incident = _examples(agent, pool, "pool")
        keys = [r.offset_key for r in agent.store.incident_records(incident)]
        for i in range(rounds):
            chosen = keys[5 * i: 5 * i + 5]
            labelled = types[i % len(types)]
            t0 = time.perf_counter()
            agent.store.apply_label(incident, labelled, actor="bench", records=chosen)
            outcome = agent.adapter.run("bench", force=True)
            t1 = time.perf_counter()
            source = open_file_source(f"batch{i}", batch_file, columns=config.schema.columns,
                                      header=False)
            agent.sources = []
            agent.attach(source)
            batch = source.fetch(500, 1.0)
            agent.pipeline.process(source, batch)
            t2 = time.perf_counter()
            statuses.append(outcome.status)
            adapt_only.append(t1 - t0)
            durations.append(t2 - t0)
        agent.close()
    ms = np.asarray(durations) * 1000
    adapt_ms = np.asarray(adapt_only) * 1000
    size = config.model.members
    name = learner if learner != "memory" else f"memory ({size} member{'s' * (size > 1)})"
    row = {"learner": name, "rounds": rounds, "startup_s": startup,
           "statuses": {s: statuses.count(s) for s in set(statuses)},
           "serving_p50_ms": float(np.percentile(ms, 50)),
           "serving_p95_ms": float(np.percentile(ms, 95)),
           "adapt_p50_ms": float(np.percentile(adapt_ms, 50)),
           "adapt_p95_ms": float(np.percentile(adapt_ms, 95))}
    print(f"  {row}", flush=True)
    return row


# --- 4: poisoned campaigns ----------------------------------------------------------------------


def poisoned_campaign(seed: int) -> dict[str, Any]:
    """The campaign of tests/integration/test_poisoned_feedback.py, measured (one seed)."""
    from agent.service import Agent

    rng = np.random.default_rng(seed)
    lines = _stream_lines()
    benign = [line for line in lines if line.split(",")[-2] == BENIGN]
    new = [line for line in lines if line.split(",")[-2] == NEW_TYPE]
    rng.shuffle(benign)
    rng.shuffle(new)
    with tempfile.TemporaryDirectory() as tmp_name:
        config = _agent_config(Path(tmp_name), "memory", 2000)
        agent = Agent(config)
        agent.prepare()
        held_out_benign, held_out_new = benign[4000:6000], new[150:]
        before = _served(agent, held_out_benign, held_out_new)
        pool = benign[:60] + new[:60]
        incident = _examples(agent, pool, "pool")
        keys = [r.offset_key for r in agent.store.incident_records(incident)]
        plan = [(60 + i, NEW_TYPE, "ana", True) for i in range(14)]
        plan += [(i, BENIGN, "bob", True) for i in range(7)]
        plan += [(10 + i, NEW_TYPE, "mallory", False) for i in range(4)]
        plan += [(80 + i, BENIGN, "mallory", False) for i in range(3)]
        classes = [c for c in agent.runtime.current().classes if c != BENIGN]
        plan += [(int(rng.integers(0, len(pool))), str(rng.choice(classes)), "rand", False)
                 for _ in range(2)]
        order = rng.permutation(len(plan))
        wrong, outcomes = set(), []
        for start in range(0, len(plan), 10):
            for index in order[start:start + 10]:
                row, label, actor, correct = plan[index]
                _, given = agent.store.apply_label(incident, label, actor=actor,
                                                   records=[keys[row]])
                if not correct:
                    wrong.add(given[0].id)
            outcomes.append(agent.adapter.run("bench: campaign", force=True).status)
        held = {label.id for label in agent.store.list_labels(status="held")}
        after = _served(agent, held_out_benign, held_out_new)
        agent.close()
    row = {"seed": seed, "labels": len(plan), "wrong": len(wrong),
           "wrong_held": len(held & wrong), "honest_held": len(held - wrong),
           "outcomes": outcomes, "before": before, "after": after}
    print(f"  {row}", flush=True)
    return row


def _served(agent: Any, benign: list[str], new: list[str]) -> dict[str, float]:
    columns = agent.config.schema.columns

    def answers(lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        fields = [dict(zip(columns, line.split(","), strict=True)) for line in lines]
        out = agent.runtime.current().classify(agent.encoder.encode(fields, textual=True).x)
        predicted = out.predicted.astype(str)
        alarm = (out.novelty_p <= agent.config.model.novel_false_alarm_rate) | (
            predicted != BENIGN)
        return predicted, alarm

    _, benign_alarm = answers(benign)
    predicted, _ = answers(new)
    return {"benign_alarm_rate": float(benign_alarm.mean()),
            "new_type_recall": float((predicted == NEW_TYPE).mean())}


# --- report -----------------------------------------------------------------------------------


def write_report(results: dict[str, Any], out: Path) -> None:
    """Write the figures; sections skipped in this run keep their previous figures."""
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "adaptation.json"
    kept = results.setdefault("kept_from_earlier_runs", {})
    if previous.is_file():
        earlier = json.loads(previous.read_text())
        for section in ("stream", "latency", "campaigns"):
            if section not in results and section in earlier:
                results[section] = earlier[section]
                kept[section] = earlier.get("kept_from_earlier_runs", {}).get(
                    section, earlier["machine"])
    (out / "adaptation.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    lines = ["# The analyst loop, measured", "",
             f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores. "
             f"Command: `nice -n 10 .venv/bin/python -m bench.adaptation"
             f"{' --quick' if results['quick'] else ''}`.", ""]
    for section, machine in kept.items():
        lines += [f"The {section} section is kept from an earlier run on {machine['cpu']}, "
                  f"{machine['cores']} cores.", ""]
    if "stream" in results:
        stream = results["stream"]
        lines += [f"## Stream loop ({stream['stream']}, {stream['records']} records, chunks of "
                  "500, first N alarms labelled)", "",
                  "Wrong names: of the alarms that carry an attack name (not `novel`), the share "
                  "naming another type than the record's.", "",
                  "| loop | labels | benign alarm rate | attack alarm rate | novel-type alarm "
                  "rate | novel-type named | wrong names | open-set AUROC |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in stream["loops"]:
            auroc = "" if r["auroc"] is None else f"{r['auroc']:.3f}"
            wrong = r.get("wrong_names")
            lines.append(f"| {r['loop']} | {r['labels']} | {r['benign_alarm_rate']:.1%} | "
                         f"{r['attack_alarm_rate']:.1%} | {r['novel_alarm_rate']:.1%} | "
                         f"{r['novel_named']:.1%} | {'–' if wrong is None else f'{wrong:.1%}'} "
                         f"| {auroc} |")
        lines += ["", "## A newly labelled type after k labels (mean over the novel types with "
                  "at least 100 records)", "",
                  "Recall: later records of the type predicted as it. Named, not novel: those "
                  "of them not also flagged novel, which the agent files in the type's named "
                  "incident (baselines have no novelty verdict).", "",
                  "| method | labels | recall | named, not novel | benign false-alarm rate |",
                  "|---|---:|---:|---:|---:|"]
        for r in stream["few_labels"]:
            not_novel = r.get("named_not_novel")
            lines.append(f"| {r['method']} | {r['labels']} | {r['recall']:.1%} | "
                         f"{'–' if not_novel is None else f'{not_novel:.1%}'} | "
                         f"{r['benign_false_alarm_rate']:.2%} |")
    if "latency" in results:
        lines += ["", "## Label → serving (5 labels of a new class; screening, enrolment, "
                  "canary, registry, swap, then a 500-record batch scored by the new version)",
                  "", "| learner | rounds | p50 | p95 | adaptation alone p50 | outcomes |",
                  "|---|---:|---:|---:|---:|---|"]
        for r in results["latency"]:
            lines.append(f"| {r['learner']} | {r['rounds']} | {r['serving_p50_ms']:.0f} ms | "
                         f"{r['serving_p95_ms']:.0f} ms | {r['adapt_p50_ms']:.0f} ms | "
                         f"{r['statuses']} |")
    if "campaigns" in results:
        lines += ["", "## Poisoned labelling campaigns (30% wrong labels, memory learner)", "",
                  "| seed | wrong labels held | honest labels held | adaptations | benign alarm "
                  "rate before → after | new-type recall after |", "|---:|---:|---:|---|---:|---:|"]
        for r in results["campaigns"]:
            lines.append(f"| {r['seed']} | {r['wrong_held']} of {r['wrong']} | "
                         f"{r['honest_held']} of {r['labels'] - r['wrong']} | "
                         f"{', '.join(r['outcomes'])} | {r['before']['benign_alarm_rate']:.2%} → "
                         f"{r['after']['benign_alarm_rate']:.2%} | "
                         f"{r['after']['new_type_recall']:.1%} |")
    (out / "adaptation.md").write_text("\n".join(lines) + "\n")
    _plot(results, out / "adaptation.png")


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("stream", "latency") if k in results]
    if not panels:
        return
    figure, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2))
    axes = np.atleast_1d(axes)
    if "stream" in results:
        ax = axes[0]
        loops = results["stream"]["loops"]
        names = list(dict.fromkeys(r["loop"] for r in loops))
        for name in names:
            rows = [r for r in loops if r["loop"] == name]
            ax.plot([r["labels"] for r in rows], [100 * r["novel_named"] for r in rows],
                    marker="o", label=f"{name}: novel named")
            ax.plot([r["labels"] for r in rows], [100 * r["benign_alarm_rate"] for r in rows],
                    marker="x", linestyle="--", label=f"{name}: benign alarms")
        ax.set_xlabel("analyst labels (first alarms)")
        ax.set_ylabel("% of records")
        ax.set_title("Stream loop on KDDTest+")
        ax.legend(fontsize=7)
    if "latency" in results:
        ax = axes[-1]
        rows = results["latency"]
        ax.bar([r["learner"] for r in rows], [r["serving_p50_ms"] for r in rows],
               label="p50")
        ax.scatter([r["learner"] for r in rows], [r["serving_p95_ms"] for r in rows],
                   color="black", marker="_", s=300, label="p95")
        ax.set_yscale("log")
        ax.tick_params(axis="x", labelrotation=25)
        ax.set_ylabel("label → serving (ms)")
        ax.set_title("Label → new version serving, CPU")
        ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Fewer rounds and budgets.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["stream", "latency", "campaigns"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, Any] = {"machine": _machine(), "quick": args.quick}
    budgets = (0, 100) if args.quick else (0, 20, 100, 500)
    if "stream" not in args.skip:
        print("1-2. stream loop and few-label recall", flush=True)
        results["stream"] = stream_and_few_labels(budgets, 2000)
    if "latency" not in args.skip:
        print("3. label -> serving, per learner", flush=True)
        rounds = 5 if args.quick else 20
        learners = ("knn", "memory", "maml") if args.quick else LEARNERS
        results["latency"] = [label_to_serving(learner, rounds, 2000 if learner in
                                               ("knn", "memory", "protonet") else 1000)
                              for learner in learners]
        results["latency"].append(label_to_serving("memory", rounds, 2000, members=ENSEMBLE))
    if "campaigns" not in args.skip:
        print("4. poisoned labelling campaigns", flush=True)
        seeds = (0,) if args.quick else (0, 1, 2, 3, 4)
        results["campaigns"] = [poisoned_campaign(seed) for seed in seeds]
    write_report(results, args.out)
    print(f"written to {args.out}/adaptation.md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
