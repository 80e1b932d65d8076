"""The adversarial and poisoning benchmarks render what they measured, ART's rows included
(or ART's absence, said in the table), and draw their plots."""

from __future__ import annotations

import json
from pathlib import Path

from bench import adversarial, poisoning


def _row(attack: str, combine: str, auroc: float) -> dict[str, object]:
    return {"combine": combine, "attack": attack, "auroc": auroc,
            "detection_at_5pct_fa_oracle": 1.0, "detection_at_1pct_fa_oracle": 0.9,
            f"detection_at_alpha_{adversarial.ALPHA}": 0.8,
            f"false_alarms_at_alpha_{adversarial.ALPHA}": 0.01, "records_per_second": 1000.0}


def test_adversarial_report_lists_every_row_and_says_when_art_is_missing(tmp_path: Path
                                                                         ) -> None:
    results = {
        "machine": {"cpu": "test cpu", "cores": 2}, "command": "python -m bench.adversarial",
        "data": {"train": 10, "detector": 4, "test": 6, "clean_accuracy": 0.9},
        "metasentry": [_row("pgd", "fisher", 0.99), _row("pgd", "harmonic", 0.98)],
        "false_alarms_by_calibration_split": {"fisher": [0.01, 0.009], "harmonic": [0.02]},
        "art": {"error": "ART venv missing (.venv-art): run bench/art_env.sh"},
    }
    text = adversarial.report(results)
    assert "| MetaSentry, fisher (no adversarial training) | pgd | 0.990 |" in text
    assert "| MetaSentry, harmonic (no adversarial training) | pgd | 0.980 |" in text
    assert "ART venv missing" in text and "fisher: 1.00%, 0.90% (mean 0.95%)" in text
    adversarial.plot(json.loads(json.dumps(results)), tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_poisoning_report_scores_each_detector(tmp_path: Path) -> None:
    row = {"recall": 0.5, "precision": 0.25, "flagged": 8, "records_per_second": 100.0}
    results = {
        "machine": {"cpu": "test cpu", "cores": 2}, "command": "python -m bench.poisoning",
        "alpha": 0.01,
        "mnist_backdoor": {"250": {"poisons": 4, "trigger_success_rate": 0.8,
                                   "detectors": {"spectral_signature": row},
                                   "art": {"results": [{
                                       "detector": "ActivationDefence", "setting": "defaults",
                                       "wrapper": "keras", "recall": 1.0, "precision": 0.1,
                                       "flagged": 40, "n_train": 100, "seconds": 2.0}]}}},
        "nsl_kdd_label_flips": {"stream": 20, "detectors": {"label_consistency": row}},
    }
    text = poisoning.report(results)
    assert "| MetaSentry spectral_signature | stream, alpha 0.01 | 0.50 | 0.25 | 8 | 100 |" in text
    assert "| ART ActivationDefence | defaults, keras | 1.00 | 0.10 | 40 | 50 |" in text
    assert "NSL-KDD, 10 % random label flips (20 records)" in text
    poisoning.plot(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
