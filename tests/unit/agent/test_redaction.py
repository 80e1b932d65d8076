"""Credentials never reach a log line or a terminal, wherever they sit in a URL or a message."""

from __future__ import annotations

import pytest

from storage.urls import redact_text, redact_url

SECRET = "s3cr3t-Val"

URLS = {
    "userinfo password": f"postgresql+psycopg://svc:{SECRET}@db:5432/prod",
    "userinfo, reserved characters unencoded": "postgresql://svc:p@ss:w/rd#1?x@db/prod",
    "userinfo, percent-encoded": "postgresql://svc:p%40ss%3Aw%2Frd@db/prod",
    "password query parameter": f"postgresql+psycopg://svc@db/prod?password={SECRET}",
    "sslpassword after other parameters": f"postgresql://db/prod?sslmode=verify-full&"
                                          f"sslpassword={SECRET}",
    "upper-case key": f"postgresql://db/prod?PASSWORD={SECRET}",
    "percent-encoded key": f"postgresql://db/prod?pass%77ord={SECRET}",
    "token parameter": f"postgresql://db/prod?access_token={SECRET}&x=1",
    "both places": f"postgresql://svc:{SECRET}@db/prod?password={SECRET}",
    "secret in a query value holding @": f"postgresql://db/prod?password={SECRET}@x",
}


@pytest.mark.parametrize("case", URLS)
def test_redact_url_masks_every_credential(case: str) -> None:
    redacted = redact_url(URLS[case])
    for fragment in (SECRET, "p@ss", "rd#1", "p%40ss"):
        assert fragment not in redacted
    assert "***" in redacted


def test_redact_url_keeps_what_is_not_secret() -> None:
    url = "postgresql+psycopg://svc@db:5432/prod?sslmode=require&passfile=/etc/pgpass"
    assert redact_url(url) == url
    assert redact_url("sqlite:////var/lib/metasentry/m.db") == "sqlite:////var/lib/metasentry/m.db"
    assert (redact_url("postgresql://svc:pw@db:5432/prod?sslkey=/k&password=pw")
            == "postgresql://svc:***@db:5432/prod?sslkey=/k&password=***")


def test_redact_url_masks_an_environment_reference_too() -> None:
    assert redact_url("postgresql://u:${PGPASSWORD}@h/db") == "postgresql://u:***@h/db"


@pytest.mark.parametrize("message", [
    f"store opened at postgresql+psycopg://u@h/db?password={SECRET}",
    f"database unavailable (connection to server failed: host=h password={SECRET} dbname=d)",
    f"request had Authorization: Bearer {SECRET}",
    f"db upgrade: postgresql://u:{SECRET}@h/db: at abc123 (0.01 s)",
])
def test_redact_text_masks_credentials_in_a_message(message: str) -> None:
    assert SECRET not in redact_text(message)


def test_redact_text_leaves_ordinary_prose_alone() -> None:
    line = "first pass: 3 files; api.token_env: METASENTRY_API_TOKEN is not set"
    assert redact_text(line) == line
