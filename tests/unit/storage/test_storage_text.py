"""Text the store writes: NUL and lone surrogates replaced, one character for one."""

from __future__ import annotations

import doctest

import numpy as np
import orjson
import pytest

import storage.text
from storage.engine import dumps_json
from storage.text import ascii_json, ascii_text, is_storable, storable_json, storable_text


def test_the_module_examples_run() -> None:
    assert doctest.testmod(storage.text).failed == 0


@pytest.mark.parametrize(("given", "stored"), [
    ("plain", "plain"),
    ("café ☃", "café ☃"),
    ("a\x00b", "a\ufffdb"),
    ("\udcff\udc80", "\ufffd\ufffd"),  # surrogateescape'd bytes
    ("\ud83d\ude00", "\ufffd\ufffd"),  # a pair split into two lone halves (JSON "\ud83d\ude00")
    ("😀", "😀"),
])
def test_storable_text_replaces_only_what_no_database_takes(given: str, stored: str) -> None:
    assert storable_text(given) == stored
    assert len(storable_text(given)) == len(given)
    assert is_storable(given) is (given == stored)
    storable_text(given).encode("utf-8")  # always encodable


def test_storable_json_reaches_keys_and_nested_values_and_leaves_numbers() -> None:
    value = {"k\x00": ["v\udcff", {"n": 1.5, "t": ("x\x00",)}], 3: np.float32(0.5)}
    assert storable_json(value) == {"k\ufffd": ["v\ufffd", {"n": 1.5, "t": ["x\ufffd"]}],
                                    3: np.float32(0.5)}


def test_json_columns_hold_no_nul_escape_and_no_surrogate() -> None:
    assert dumps_json({"a": "x\x00"}) == '{"a":"x\ufffd"}'
    assert dumps_json({"a\udcff": ["\ud800"]}) == '{"a\ufffd":["\ufffd"]}'
    assert dumps_json({"a": "a backslash \\u0000 is text"}) == (
        '{"a":"a backslash \\\\u0000 is text"}'
    )
    with pytest.raises(orjson.JSONEncodeError):
        dumps_json({"a": object()})  # not text: nothing to sanitise, still refused


def test_ascii_forms_are_ascii_and_keep_what_they_can() -> None:
    assert ascii_text("snow ☃\x00\udcff") == "snow \\u2603\\x00\\udcff"
    assert ascii_json({"é": [np.int64(2), "☃", None, True, object]}) == {
        "\\xe9": [2, "\\u2603", None, True, "<class 'object'>"]}
    orjson.dumps(ascii_json({"é": np.arange(2)})).decode("ascii")
