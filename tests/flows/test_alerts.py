"""Alerts reach the owner: a local HTTP receiver started by the test stands in for the
webhook behind a Prefect notification block; a halt, a failed V6 run and the daily
summary each deliver one message to it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from core.config import Settings
from core.runtime import Runtime, use_runtime
from core.store import DeltaStore
from flows.flatten import flatten
from flows.halt import halt
from flows.maintenance import maintenance

BLOCK = "v6-alerts-test"


class Receiver:
    """A webhook on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(size)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


@pytest.fixture
async def runtime(store_root: Path, receiver: Receiver) -> Runtime:
    block = CustomWebhookNotificationBlock(
        name=BLOCK, url=receiver.url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    )
    await block.save(BLOCK, overwrite=True)
    settings = Settings(alerts={"blocks": [f"custom-webhook/{BLOCK}"]})
    return Runtime(settings, DeltaStore(store_root))


async def test_a_halt_is_announced(runtime: Runtime, receiver: Receiver) -> None:
    with use_runtime(runtime):
        await halt(reason="fed surprise", actor="alice")
    (msg,) = receiver.messages
    assert msg["subject"] == "V6 HALTED by alice"
    assert "fed surprise" in msg["body"] and "exits allowed" in msg["body"]


async def test_a_failed_run_is_announced(runtime: Runtime, receiver: Receiver) -> None:
    with use_runtime(runtime):
        state = await flatten(reason="drill", return_state=True)  # no confirm: refused
    assert state.is_failed()
    (msg,) = receiver.messages
    assert msg["subject"] == "V6 flatten: Failed"
    assert "confirm=true" in msg["body"] and str(runtime.store.root) in msg["body"]


async def test_the_daily_summary_after_maintenance(runtime: Runtime, receiver: Receiver) -> None:
    with use_runtime(runtime):
        await maintenance()
    (msg,) = receiver.messages
    assert msg["subject"].startswith("V6 daily summary ")
    assert "breaker: CLOSED" in msg["body"] and "open strategies: 0" in msg["body"]


async def test_a_broken_block_changes_nothing(store_root: Path) -> None:
    settings = Settings(alerts={"blocks": ["custom-webhook/no-such-block"]})
    with use_runtime(Runtime(settings, DeltaStore(store_root))):
        out = await halt(reason="drill", actor="alice")
    assert out["to"] == "HALTED"
