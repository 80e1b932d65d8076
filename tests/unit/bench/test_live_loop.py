"""The analyst-loop benchmark's few-label figures on a hand-made stream (no data files)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.live_loop import Stream, few_label_recall, run_loop, trees_loop  # noqa: E402
from meta.live import AlertModel, SupportSet  # noqa: E402


def _stream(rng: np.random.Generator) -> tuple[SupportSet, Stream]:
    normal = rng.normal(0.0, 1.0, (600, 3))
    scan = rng.normal(8.0, 1.0, (200, 3))
    x = np.concatenate([normal[:300], scan[:100]])
    y = np.array(["normal"] * 300 + ["scan"] * 100)
    support = SupportSet(x=x, y=y, origin=[f"reference:{i}" for i in range(len(y))],
                         numeric=x, categorical=np.zeros((len(y), 0)))
    tunnel = rng.normal([0.0, 30.0, 0.0], 3.0, (150, 3))
    stream_x = np.concatenate([normal[300:], tunnel])
    stream_y = np.array(["normal"] * 300 + ["tunnel"] * 150)
    stream = Stream(name="hand-made", x=stream_x, y=stream_y, numeric=stream_x,
                    categorical=np.zeros((len(stream_y), 0)),
                    novel=stream_y == "tunnel")
    return support, stream


def test_the_agent_rows_say_how_many_named_records_stay_out_of_novel_incidents() -> None:
    support, stream = _stream(np.random.default_rng(0))
    model = AlertModel.build("knn", None, support, benign_class="normal")
    rows = few_label_recall(model, support, stream, shots=(5,), name="knn (here)")
    by_method = {row.method: row for row in rows}
    assert set(by_method) == {"knn (here)", "1-NN raw", "logistic head", "extra trees"}
    assert by_method["extra trees"].recall > 0.9
    agent = by_method["knn (here)"]
    assert agent.types == 1 and agent.recall > 0.95
    assert agent.named_not_novel is not None
    assert 0.8 < agent.named_not_novel <= agent.recall
    assert by_method["1-NN raw"].named_not_novel is None
    alone = few_label_recall(model, support, stream, shots=(5,), baselines=False)
    assert [row.method for row in alone] == ["knn (agent)"]
    assert alone[0].named_not_novel == agent.named_not_novel


def test_wrong_names_count_only_alarms_that_carry_an_attack_name() -> None:
    _, stream = _stream(np.random.default_rng(1))
    tunnel = np.flatnonzero(stream.y == "tunnel")

    def score(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Benign records pass; of the tunnel records, a fifth are named "scan" (wrong), a
        # fifth "<novel>" (no name), the rest "tunnel".
        predicted = stream.y[rows].astype(object)
        position = np.searchsorted(tunnel, rows)
        is_tunnel = stream.y[rows] == "tunnel"
        predicted[is_tunnel & (position % 5 == 0)] = "scan"
        predicted[is_tunnel & (position % 5 == 1)] = "<novel>"
        return predicted, is_tunnel, np.zeros(rows.size)

    result = run_loop("hand-made", stream, 0, score, lambda rows: None, lambda: 0.0)
    assert result.attack_alarm_rate == 1.0
    assert result.wrong_names == 30 / 120  # 30 named "scan" among the 120 given a name
    assert result.novel_named == 90 / 150


def test_the_trees_baseline_alarms_on_attack_predictions_and_learns_from_labels() -> None:
    rng = np.random.default_rng(2)
    support, _ = _stream(rng)
    # Three chunks of stream, so labels from the first can teach the later ones.
    x = np.concatenate([rng.normal(0.0, 1.0, (1000, 3)), rng.normal([0.0, 30.0, 0.0], 3.0,
                                                                     (500, 3))])
    y = np.array(["normal"] * 1000 + ["tunnel"] * 500)
    order = rng.permutation(len(y))
    stream = Stream(name="shuffled", x=x[order], y=y[order], numeric=x[order],
                    categorical=np.zeros((len(y), 0)), novel=y[order] == "tunnel")
    before = trees_loop(support, stream, 0, lambda: 0.0)
    assert before.benign_alarm_rate < 0.05
    assert before.novel_named == 0.0 and before.auroc is not None
    after = trees_loop(support, stream, 100, lambda: 0.0)
    assert after.labels > 0 and after.novel_named > 0.3
