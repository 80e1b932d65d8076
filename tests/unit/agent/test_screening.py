"""Screening analyst labels: what it holds, what it lets through, and why it says so."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from agent.canary import CanaryLimits, CanaryReport, failed_limits
from agent.config import ScreeningConfig
from agent.screening import ActorRecord, Candidate, screen
from meta.live import AlertModel, SupportSet


def _model(seed: int = 0) -> AlertModel:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0.0, 1.0, (600, 4)), rng.normal(8.0, 1.0, (200, 4))])
    y = np.array(["normal"] * 600 + ["scan"] * 200)
    support = SupportSet(x=x, y=y, origin=[f"reference:{i}" for i in range(len(y))],
                         numeric=x, categorical=np.zeros((len(y), 0)))
    return AlertModel.build("knn", None, support, benign_class="normal")


def _candidate(label_id: int, x: list[float], label: str, actor: str = "ana",
               record_id: int | None = None) -> Candidate:
    return Candidate(label_id=label_id, label=label, actor=actor,
                     record_id=record_id if record_id is not None else label_id,
                     x=np.asarray(x, np.float32))


def test_a_new_kind_of_record_can_be_taught_any_label() -> None:
    far = [[20.0 + i * 0.1, 20.0, -20.0, 20.0] for i in range(5)]
    result = screen([_candidate(i, x, "tunnel") for i, x in enumerate(far)], _model(),
                    ScreeningConfig())
    assert result.accepted == (0, 1, 2, 3, 4) and not result.held


def test_records_deep_inside_a_class_keep_that_class() -> None:
    inside_normal = _candidate(1, [0.1, -0.2, 0.0, 0.1], "scan")
    inside_scan = _candidate(2, [8.1, 7.9, 8.0, 8.2], "normal")
    honest = _candidate(3, [8.0, 8.1, 7.8, 8.0], "scan")
    result = screen([inside_normal, inside_scan, honest], _model(), ScreeningConfig())
    assert set(result.held) == {1, 2} and result.accepted == (3,)
    assert "'normal'" in result.held[1] and "'scan'" in result.held[2]


def test_a_benign_label_amid_labels_of_a_new_class_is_outvoted() -> None:
    cluster = [[20.0 + 0.05 * i, 20.0, -20.0, 20.0] for i in range(6)]
    honest = [_candidate(i, x, "tunnel", actor="ana") for i, x in enumerate(cluster[:5])]
    poisoned = _candidate(9, cluster[5], "normal", actor="mallory")
    result = screen([*honest, poisoned], _model(), ScreeningConfig())
    assert set(result.held) == {9} and "analyst labels" in result.held[9]


def test_conflicting_labels_on_one_record_hold_the_less_trusted_actor() -> None:
    history: dict[str, ActorRecord] = defaultdict(ActorRecord)
    history["ana"] = ActorRecord(screened=10, passed=10)
    history["eve"] = ActorRecord(screened=10, passed=6)
    far = [30.0, -30.0, 30.0, -30.0]
    result = screen([_candidate(1, far, "tunnel", "ana", record_id=7),
                     _candidate(2, far, "normal", "eve", record_id=7)], _model(),
                    ScreeningConfig(), history=history)
    assert set(result.held) == {2} and "conflict" in result.held[2]


def test_an_actor_who_keeps_failing_screening_is_stopped() -> None:
    history: dict[str, ActorRecord] = defaultdict(ActorRecord)
    history["rand"] = ActorRecord(screened=8, passed=1)
    far = [40.0, 40.0, 40.0, 40.0]
    result = screen([_candidate(5, far, "tunnel", actor="rand")], _model(), ScreeningConfig(),
                    history=history)
    assert "agreement" in result.held[5]


def test_released_labels_and_disabled_screening_let_everything_through() -> None:
    inside = Candidate(label_id=1, label="scan", actor="ana", record_id=1,
                       x=np.zeros(4, np.float32), released=True)
    assert screen([inside], _model(), ScreeningConfig()).accepted == (1,)
    plain = _candidate(2, [0.0, 0.0, 0.0, 0.0], "scan")
    assert screen([plain], _model(), ScreeningConfig(enabled=False)).accepted == (2,)


def test_canary_limits_name_each_figure_that_got_worse() -> None:
    serving = CanaryReport(known_accuracy=0.95, benign_false_alarm_rate=0.01, records=100,
                           benign_records=50, earlier_label_accuracy=1.0, earlier_labels=5)
    limits = CanaryLimits(max_known_drop=0.02, max_benign_increase=0.01)
    fine = CanaryReport(known_accuracy=0.94, benign_false_alarm_rate=0.015, records=100,
                        benign_records=50, earlier_label_accuracy=1.0, earlier_labels=5)
    worse = CanaryReport(known_accuracy=0.90, benign_false_alarm_rate=0.05, records=100,
                         benign_records=50, earlier_label_accuracy=0.6, earlier_labels=5)
    assert failed_limits(fine, serving, limits) == []
    reasons = failed_limits(worse, serving, limits)
    assert len(reasons) == 3
    assert any("known-class accuracy" in r for r in reasons)
    assert any("benign false-alarm rate" in r for r in reasons)
    assert any("earlier accepted labels" in r for r in reasons)
    assert failed_limits(worse, None, limits) == []
