"""Where `v6 demo` tells the user to look at its runs: the server it ran against, else the
local database a `prefect server start` shows."""

from __future__ import annotations

from prefect.settings import PREFECT_API_URL, temporary_settings

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
