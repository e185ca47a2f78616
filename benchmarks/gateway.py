"""Messages per second through ib_async against the gateway simulator.

What is measured: market-data ticks streamed for N option contracts (the same
pre-encoded bytes, `rounds` times) until a reqCurrentTime sent after them is answered,
i.e. until the client has processed every tick.

- ib_async: the real client (`IB.reqMktData` streams; Decoder -> Wrapper -> Ticker);
- baseline, same run, same server, same bytes: a raw asyncio socket client that does the
  handshake itself and only frames and splits the messages (no decoding into objects).

`ratio` = ib_async msgs/s / raw msgs/s: the share of raw socket throughput left after
ib_async's decoding. Historical-bar throughput (bars/s through reqHistoricalDataAsync)
is reported too. Usage: `python benchmarks/gateway.py [contracts] [rounds]`.
"""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import time
from datetime import timedelta

from ib_async import IB, Contract, Stock

from core.config import Settings
from core.domain import Contract as V6Contract
from core.sim.exchange import SimExchange, build_exchange
from core.sim.gateway.messages import ib_date
from core.sim.gateway.server import GatewayServer
from core.sim.gateway.wire import encode


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def options(ex: SimExchange, n: int) -> list[V6Contract]:
    chain = ex.option_chains("SPY")[0]
    spot = ex.market.price("SPY")
    strikes = sorted(chain.strikes, key=lambda k: abs(k - spot))[: (n + 1) // 2]
    out = []
    for k in strikes:
        for right in ("P", "C"):
            c = ex.qualify(V6Contract.option("SPY", chain.expirations[3], k, right))
            if c is not None:
                out.append(c)
    return out[:n]


async def ib_async_rate(gw: GatewayServer, contracts: list[V6Contract], rounds: int) -> float:
    ib = IB()
    await ib.connectAsync("127.0.0.1", gw.port, clientId=1, timeout=10)
    try:
        for c in contracts:
            ib.reqMktData(Contract(conId=c.con_id, exchange="SMART"))
        await ib.reqCurrentTimeAsync()  # every subscription is answered
        before = ib.client.connectionStats().numMsgRecv
        t0 = time.perf_counter()
        sent = await gw.stream_burst(rounds)
        await ib.reqCurrentTimeAsync()  # answered after every tick was processed
        elapsed = time.perf_counter() - t0
        got = ib.client.connectionStats().numMsgRecv - before - 1
        assert got == sent, (got, sent)
        log(f"ib_async: {sent} messages in {elapsed:.3f} s")
        return sent / elapsed
    finally:
        ib.disconnect()


async def raw_rate(gw: GatewayServer, contracts: list[V6Contract], rounds: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    offer = b"v178..178"
    writer.write(b"API\0" + struct.pack(">I", len(offer)) + offer)
    writer.write(encode([71, 2, 2, ""]))
    for i, c in enumerate(contracts, start=1):
        c12 = [c.con_id, c.symbol, "OPT", ib_date(c.expiry), c.strike, c.right, "100", "SMART"]
        c12 += ["", "USD", c.local_symbol, c.trading_class]
        writer.write(encode([1, 11, i, *c12, False, "", False, False, ""]))
    buf = bytearray()
    count = 0

    async def read_until_time() -> None:
        nonlocal count
        while True:
            buf.extend(await reader.read(1 << 16))
            while len(buf) >= 4:
                (size,) = struct.unpack_from(">I", buf)
                if len(buf) < 4 + size:
                    break
                fields = bytes(buf[4 : 4 + size]).decode(errors="backslashreplace").split("\0")
                del buf[: 4 + size]
                count += 1
                if fields[0] == "49":
                    return

    writer.write(encode([49, 1]))
    await read_until_time()  # every subscription is answered
    count = 0
    reading = asyncio.ensure_future(read_until_time())  # reads while the burst is written
    t0 = time.perf_counter()
    sent = await gw.stream_burst(rounds)
    writer.write(encode([49, 1]))  # answered after every tick was read
    await reading
    elapsed = time.perf_counter() - t0
    assert count - 1 == sent, (count, sent)
    writer.close()
    log(f"raw socket: {sent} messages in {elapsed:.3f} s")
    return sent / elapsed


async def bars_rate(gw: GatewayServer, repeats: int) -> float:
    ib = IB()
    await ib.connectAsync("127.0.0.1", gw.port, clientId=3, timeout=10)
    try:
        spy = Stock("SPY", "SMART", "USD")
        await ib.qualifyContractsAsync(spy)
        total = 0
        t0 = time.perf_counter()
        for _ in range(repeats):
            bars = await ib.reqHistoricalDataAsync(spy, "", "5 D", "1 min", "TRADES", False, 2)
            total += len(bars)
        elapsed = time.perf_counter() - t0
        log(f"historical: {total} bars in {elapsed:.3f} s")
        return total / elapsed
    finally:
        ib.disconnect()


async def main(n: int, rounds: int) -> dict[str, float | int]:
    ex = build_exchange(Settings())
    ex.market.clock.advance(timedelta(days=7))  # a week of history behind the clock
    ex.on_clock()
    contracts = options(ex, n)
    async with GatewayServer(ex, market_data_lines=10 * n, realtime_data=True) as gw:
        ib_mps = await ib_async_rate(gw, contracts, rounds)
        raw_mps = await raw_rate(gw, contracts, rounds)
        bps = await bars_rate(gw, 5)
        assert gw.protocol_errors == [], gw.protocol_errors
    return {
        "messages_per_second": round(ib_mps),
        "baseline_messages_per_second": round(raw_mps),
        "ratio": round(ib_mps / raw_mps, 4),
        "contracts": len(contracts),
        "rounds": rounds,
        "historical_bars_per_second": round(bps),
    }


if __name__ == "__main__":
    n_contracts = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    n_rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    result = asyncio.run(main(n_contracts, n_rounds))
    print(json.dumps(result))
