"""The analyst-loop benchmark's few-label figures on a hand-made stream (no data files)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[3]
if str(REPO) not in sys.path:  # bench/ is a tool beside the installed packages, not one of them
    sys.path.insert(0, str(REPO))

from bench.live_loop import Stream, few_label_recall  # noqa: E402
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
    assert set(by_method) == {"knn (here)", "1-NN raw", "logistic head"}
    agent = by_method["knn (here)"]
    assert agent.types == 1 and agent.recall > 0.95
    assert agent.named_not_novel is not None
    assert 0.8 < agent.named_not_novel <= agent.recall
    assert by_method["1-NN raw"].named_not_novel is None
    alone = few_label_recall(model, support, stream, shots=(5,), baselines=False)
    assert [row.method for row in alone] == ["knn (agent)"]
    assert alone[0].named_not_novel == agent.named_not_novel
