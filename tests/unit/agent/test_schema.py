"""The encoder: fitted scaling and vocabularies, vectorised encoding, named bad-record reasons."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import SchemaConfig
from agent.schema import Encoder, EncoderNotFitted


def _schema() -> SchemaConfig:
    return SchemaConfig(features=[
        {"name": "bytes", "type": "numeric", "transform": "log1p"},
        {"name": "rate", "type": "numeric", "scale": "minmax"},
        {"name": "proto", "type": "categorical"},
        {"name": "flag", "type": "boolean"},
        {"name": "img", "type": "tensor", "shape": [2, 2]},
    ], label="label")


def _record(i: int) -> dict:
    return {"bytes": 10 ** (i % 4), "rate": i / 10, "proto": ["tcp", "udp"][i % 2],
            "flag": i % 3 == 0, "img": [[i, 0], [0, 1]], "label": f"c{i % 2}"}


@pytest.fixture
def encoder() -> Encoder:
    return Encoder(_schema()).fit([_record(i) for i in range(20)])


def test_layout_and_scaling(encoder: Encoder) -> None:
    assert encoder.column_groups() == [("bytes", 1), ("rate", 1), ("proto", 3), ("flag", 1),
                                       ("img", 4)]
    out = encoder.encode([_record(i) for i in range(20)])
    assert out.x.shape == (20, encoder.dim) and out.x.dtype == np.float32
    assert abs(float(out.x[:, 0].mean())) < 1e-5 and abs(float(out.x[:, 0].std()) - 1) < 1e-4
    assert float(out.x[:, 1].min()) == 0.0 and float(out.x[:, 1].max()) == pytest.approx(1.0)
    # one-hot with the unknown bucket last
    assert out.x[:, 2:5].sum(axis=1).tolist() == [1.0] * 20
    assert list(out.labels) == [f"c{i % 2}" for i in range(20)]
    assert out.features.categorical_names == ("proto", "flag")
    assert out.features.numeric[:, 0][1] == 10.0  # raw units, for explanations


def test_unknown_category_goes_to_the_unknown_bucket(encoder: Encoder) -> None:
    rec = _record(1) | {"proto": "icmp"}
    out = encoder.encode([rec])
    assert out.x[0, 2:5].tolist() == [0.0, 0.0, 1.0]
    assert out.features.categorical[0, 0] == 2  # == len(vocab)


@pytest.mark.parametrize(("change", "reason"), [
    ({"bytes": "12"}, "wrong_type"),           # JSON: a number as text is a type error
    ({"bytes": None}, "missing_field"),
    ({"rate": float("nan")}, "non_finite"),
    ({"rate": float("inf")}, "non_finite"),
    ({"proto": ["tcp"]}, "wrong_type"),
    ({"flag": "maybe"}, "wrong_type"),
    ({"img": [[1, 2, 3]]}, "bad_shape"),
    ({"img": [[1, "x"], [0, 1]]}, "wrong_type"),
    ({"bytes": True}, "wrong_type"),
])
def test_bad_records_are_named_not_raised(encoder: Encoder, change: dict, reason: str) -> None:
    good = [_record(i) for i in range(5)]
    out = encoder.encode(good[:2] + [_record(2) | change] + good[3:])
    assert out.ok.tolist() == [True, True, False, True, True]
    assert [(e.index, e.reason) for e in out.errors] == [(2, reason)]
    assert out.x.shape[0] == 4
    field = next(iter(change))
    assert out.errors[0].detail.startswith(field)


def test_missing_key_is_missing_field(encoder: Encoder) -> None:
    rec = _record(0)
    del rec["proto"]
    out = encoder.encode([rec])
    assert [e.reason for e in out.errors] == ["missing_field"]


def test_textual_records_parse_numbers(encoder: Encoder) -> None:
    rec = {"bytes": "100", "rate": "0.5", "proto": "tcp", "flag": "true", "img": "[[1,0],[0,1]]"}
    out = encoder.encode([rec, rec | {"rate": "fast"}, rec | {"rate": "nan"}], textual=True)
    assert out.ok.tolist() == [True, False, False]
    assert [e.reason for e in out.errors] == ["wrong_type", "non_finite"]


def test_state_round_trip_is_json_and_identical(encoder: Encoder) -> None:
    import json

    state = json.loads(json.dumps(encoder.state_dict()))
    clone = Encoder.from_state(state)
    batch = [_record(i) for i in range(7)]
    np.testing.assert_array_equal(clone.encode(batch).x, encoder.encode(batch).x)


def test_encode_before_fit_is_a_clear_error() -> None:
    with pytest.raises(EncoderNotFitted, match="call fit"):
        Encoder(_schema()).encode([_record(0)])


def test_fit_on_nothing_usable_is_an_error() -> None:
    with pytest.raises(ValueError, match="no reference record"):
        Encoder(_schema()).fit([{"bytes": "x"}])
