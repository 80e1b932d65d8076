"""How long the store lets PostgreSQL take: validated settings, passed on as libpq expects."""

from __future__ import annotations

import doctest

import pytest
from sqlalchemy import make_url

import storage.engine
from storage import Store, StoreTimeouts
from storage.engine import postgres_connect_args


def test_the_module_examples_run() -> None:
    assert doctest.testmod(storage.engine).failed == 0


def test_defaults_bound_every_wait() -> None:
    args = postgres_connect_args(make_url("postgresql+psycopg://u@h/db"), StoreTimeouts())
    assert args == {
        "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
        "keepalives_interval": 10, "keepalives_count": 3, "tcp_user_timeout": 30_000,
        "options": "-c statement_timeout=30000 -c idle_in_transaction_session_timeout=60000",
    }


def test_settings_in_the_url_win() -> None:
    url = make_url("postgresql+psycopg://u@h/db?connect_timeout=3"
                   "&options=-csearch_path%3Dx%20-c%20statement_timeout%3D500")
    args = postgres_connect_args(url, StoreTimeouts(connect_s=0.5))
    assert "connect_timeout" not in args
    assert args["options"] == (
        "-csearch_path=x -c statement_timeout=500 -c idle_in_transaction_session_timeout=60000"
    )


def test_libpq_units_and_minimums() -> None:
    args = StoreTimeouts(connect_s=0.5, tcp_user_timeout_s=1.5,
                         keepalives_idle_s=0.2).libpq_parameters()
    assert (args["connect_timeout"], args["tcp_user_timeout"], args["keepalives_idle"]) == (
        2, 1500, 1)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("operation_s", 0, "operation_s must be a positive number of seconds, got 0."),
    ("statement_s", float("inf"), "statement_s must be a positive number of seconds, got inf."),
    ("ping_s", "5", "ping_s must be a positive number of seconds, got '5'."),
    ("keepalives_count", 0, "keepalives_count must be an integer >= 1, got 0."),
    ("keepalives_count", 2.0, "keepalives_count must be an integer >= 1, got 2.0."),
])
def test_bad_settings_are_refused_with_one_sentence(field: str, value: object,
                                                    message: str) -> None:
    with pytest.raises(ValueError) as caught:
        StoreTimeouts(**{field: value})  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_a_store_keeps_its_timeouts() -> None:
    timeouts = StoreTimeouts(operation_s=9)
    with Store("postgresql+psycopg://u@h/db", timeouts=timeouts) as store:
        assert store.timeouts is timeouts
    with Store("sqlite://") as store:
        assert store.timeouts == StoreTimeouts()
