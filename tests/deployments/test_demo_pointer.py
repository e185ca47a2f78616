"""Where `v6 demo` tells the user to look at its runs: the server it ran against, else the
local database a `prefect server start` shows."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments import local_api
from deployments.demo import _where_the_runs_are


def test_a_configured_server_is_named_not_the_default_port() -> None:
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:4399/api"}):
        text = _where_the_runs_are("home:v6-abc")
    assert "http://127.0.0.1:4399/runs" in text and "home:v6-abc" in text
    assert "4200" not in text


def test_without_a_server_the_local_database_is_named() -> None:
    with temporary_settings({PREFECT_API_URL: None}):
        text = _where_the_runs_are("home:v6-abc")
    assert "prefect server start" in text and "http://127.0.0.1:4200/runs" in text


def test_the_commands_own_temporary_api_is_not_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """`v6 demo` without a server runs on a temporary API that dies with it: the user is
    sent to `prefect server start` on the same database, not to a dead port."""
    url = "http://127.0.0.1:40451/api"
    monkeypatch.setattr(local_api, "_temporary_url", url)
    with temporary_settings({PREFECT_API_URL: url}):
        text = _where_the_runs_are("home:v6-abc")
    assert "40451" not in text and "prefect server start" in text
