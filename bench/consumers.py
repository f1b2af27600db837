"""Baseline consumers run as their own processes: plain and raw redis-py, and FastStream.

    python -m bench.consumers plain URL STREAM COUNT percall|batch|latency
    python -m bench.consumers raw URL STREAM COUNT percall|batch|latency
    python -m bench.consumers faststream URL STREAM COUNT percall|latency

Each reads COUNT messages from STREAM through a consumer group, acks them, and when done
RPUSHes its latencies (ms, latency mode) to STREAM:latency and "done" to STREAM:done.

``plain`` is the loop a user writes by hand for a constant payload (flat stream fields, no JSON):
per call it reads one entry (XREADGROUP COUNT 1) and acks it (XACK); batch and latency read up to
1,000 (XREADGROUP COUNT 1000) and ack each read with one multi-id XACK. ``raw`` is the same
redis-py loop carrying hivebus's JSON payload, decoded per message; it reads 100 at a time in
batch mode and one at a time (acking each) per call and in latency mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any


async def _report(client: Any, stream: str, latencies: list[float]) -> None:
    """Hand the latencies (if any) and "done" back to the bench process, and close the client."""
    if latencies:
        await client.rpush(f"{stream}:latency", *[f"{x:.4f}" for x in latencies])
    await client.rpush(f"{stream}:done", "1")
    await client.aclose()


async def raw(url: str, stream: str, count: int, mode: str) -> None:
    import redis.asyncio as aioredis
    from redis import exceptions

    client = aioredis.Redis.from_url(url)
    with contextlib.suppress(exceptions.ResponseError):
        await client.xgroup_create(stream, "bench", id="0", mkstream=True)
    seen, latencies = 0, []
    batch = 100 if mode == "batch" else 1
    while seen < count:
        reply = await client.xreadgroup("bench", "c1", {stream: ">"}, count=batch, block=1000)
        for _, entries in reply or []:
            ids = []
            for entry_id, fields in entries:
                payload = json.loads(fields[b"data"])  # decode like a real consumer would
                if mode == "latency":
                    latencies.append((time.time() - payload["data"]["sent_at"]) * 1000)
                ids.append(entry_id)
                if batch == 1:
                    await client.xack(stream, "bench", entry_id)
            if batch > 1 and ids:
                await client.xack(stream, "bench", *ids)
            seen += len(ids)
    await _report(client, stream, latencies)


async def plain(url: str, stream: str, count: int, mode: str) -> None:
    import redis.asyncio as aioredis
    from redis import exceptions

    client = aioredis.Redis.from_url(url)
    with contextlib.suppress(exceptions.ResponseError):
        await client.xgroup_create(stream, "bench", id="0", mkstream=True)
    seen, latencies = 0, []
    per_call = mode == "percall"
    while seen < count:
        reply = await client.xreadgroup("bench", "c1", {stream: ">"}, count=1 if per_call else 1000,
                                        block=1000)
        for _, entries in reply or []:
            if mode == "latency":
                for _, fields in entries:
                    latencies.append((time.time() - float(fields[b"sent_at"])) * 1000)
            ids = [entry_id for entry_id, _ in entries]
            if ids:
                await client.xack(stream, "bench", *ids)
            seen += len(ids)
    await _report(client, stream, latencies)


async def faststream(url: str, stream: str, count: int, mode: str) -> None:
    from faststream.redis import RedisBroker, StreamSub
    from pydantic import BaseModel

    class Whale(BaseModel):
        signal_type: str
        source_agent: str
        severity: str
        confidence: float
        data: dict[str, float]

    broker = RedisBroker(url, logger=None)
    done = asyncio.Event()
    seen = 0
    latencies: list[float] = []

    @broker.subscriber(stream=StreamSub(stream, group="bench", consumer="c1"))
    async def handle(message: Whale) -> None:
        nonlocal seen
        if mode == "latency":
            latencies.append((time.time() - message.data["sent_at"]) * 1000)
        seen += 1
        if seen >= count:
            done.set()

    async with broker:
        await broker.start()
        await done.wait()
        await asyncio.sleep(0.2)  # let the last ack go out
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    await _report(client, stream, latencies)


if __name__ == "__main__":
    kind, url, stream, count, mode = sys.argv[1:6]
    asyncio.run({"plain": plain, "raw": raw, "faststream": faststream}[kind](url, stream, int(count), mode))
