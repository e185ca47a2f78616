"""Screenshots of V6 in the Prefect UI for the README (a documentation step, run by hand).

Not a test and not part of V6: it drives headless Chromium (Debian package `chromium`)
over the DevTools protocol against a running `prefect server` that a `v6 demo` has
filled, and writes PNGs next to this file. Chromium's own `--screenshot` flag shoots
before the UI's data requests answer (a blank page), so each shot waits until the page
shows text it must contain. How the README's images were made: docs/screenshots/README.md.

    python docs/screenshots/take.py --api http://127.0.0.1:4399 --home v6-cb860d4aeb
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 1400, 900
WAIT_S = 45.0


def latest_artifact_id(api: str, key: str) -> str:
    """The newest artifact with `key` (the UI's by-key page shows the key's history)."""
    reply = httpx.post(
        f"{api}/api/artifacts/filter",
        json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 1},
        timeout=10,
    )
    reply.raise_for_status()
    rows = reply.json()
    if not rows:
        raise SystemExit(f"no artifact {key!r} on {api}: run `v6 demo` against this server first")
    return str(rows[0]["id"])


class Page:
    """One Chromium tab over the DevTools websocket: navigate, wait for text, shoot."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:  # events arrive between replies; only our reply matters here
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    async def shoot(self, url: str, must_show: str, out: Path) -> None:
        await self.call("Page.navigate", url=url)
        probe = f"document.body && document.body.innerText.includes({json.dumps(must_show)})"
        deadline = time.monotonic() + WAIT_S
        while True:
            got = await self.call("Runtime.evaluate", expression=probe, returnByValue=True)
            if got.get("result", {}).get("value") is True:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not show {must_show!r} within {WAIT_S:.0f}s")
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.5)  # let images (the equity SVG) and fonts paint
        shot = await self.call("Page.captureScreenshot", format="png")
        out.write_bytes(base64.b64decode(shot["data"]))
        print(f"{out.relative_to(HERE.parents[1])}: {url}")


async def main(api: str, home: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found: apt-get install chromium (as root)")
    positions = latest_artifact_id(api, f"positions-{home}")
    equity = latest_artifact_id(api, f"equity-{home}")
    shots = [  # url, text it must show, file, viewport (the table is wide, the list long)
        (f"{api}/artifacts/artifact/{positions}", "iron_condor", "positions.png", (2400, 640)),
        (f"{api}/artifacts/artifact/{equity}", "net liquidation", "equity.png", (WIDTH, 640)),
        (f"{api}/runs", "cycle 2026-", "runs.png", (WIDTH, 1700)),
    ]
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={WIDTH},{HEIGHT}", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + WAIT_S
            while not port_file.exists() or not port_file.read_text().strip():
                if time.monotonic() > deadline or browser.poll() is not None:
                    raise SystemExit("chromium did not open its DevTools port")
                await asyncio.sleep(0.2)
            port = port_file.read_text().split()[0]
            tabs = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            tab = next(t for t in tabs if t.get("type") == "page")
            async with websockets.connect(tab["webSocketDebuggerUrl"], max_size=None) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                for url, must_show, name, (width, height) in shots:
                    await page.call(
                        "Emulation.setDeviceMetricsOverride",
                        width=width, height=height, deviceScaleFactor=1, mobile=False,
                    )  # fmt: skip
                    await page.shoot(url, must_show, HERE / name)
        finally:
            browser.terminate()
            browser.wait(timeout=30)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:4200", help="the Prefect server")
    parser.add_argument("--home", required=True, help="the installation id, e.g. v6-cb860d4aeb")
    args = parser.parse_args()
    asyncio.run(main(args.api.rstrip("/"), args.home))
