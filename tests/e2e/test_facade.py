"""Issue 13, do-items 2 and 3: the Hivebus facade, and a library that is quiet unless asked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hivebus.agents.runtime import Agent, Context, handles
from hivebus.domain.keys import Keys
from hivebus.domain.models import Signal
from hivebus.facade import Hivebus
from tests.conftest import REPO, RedisServer, eventually, hivebus_env

pytestmark = pytest.mark.anyio


class Counter(Agent):
    agent_type = "counter"

    @handles("PING")
    async def on_ping(self, signal: Signal, ctx: Context) -> None:
        await self.memory.remember("ping", f"ping number {signal.data['n']}", score=0.5)
        await ctx.publish("PONG", to=[signal.source_agent], data={"n": signal.data["n"]})


async def test_connect_run_publish_and_read_back(real_server: RedisServer, namespace: str,
                                                 tmp_path: Path) -> None:
    async with Hivebus.connect(real_server.url, namespace=namespace, home=tmp_path) as hb:
        running = await hb.run(Counter("counter-1"))
        ids = [await hb.publish("PING", {"n": n}, to="counter-1") for n in range(3)]
        memory = hb.memory("counter-1")

        async def all_remembered() -> bool:
            return len(await memory.recall("ping", topk=10)) == 3

        await eventually(all_remembered, 20, "the agent to remember three pings")
        # the replies to the default source wait in its inbox (it is a registered publisher)
        assert await hb.redis.xlen(Keys(namespace).inbox("app")) == 3
        assert (await hb.registry.get("counter-1")).alive
        report = await hb.bus.report(ids[0])
        assert report.signal.source_agent == "app"
        assert [t.status.value for t in report.targets] == ["PROCESSED"]
        await running.stop()
        assert not (await hb.registry.get("counter-1")).alive
        decision_id = await hb.decisions.log_decision("counter-1", "TRADE_EXECUTION")
        assert [d.decision_id for d in await hb.decisions.query("counter-1")] == [decision_id]
        assert await hb.patterns.query() == []


async def test_a_first_settle_is_not_held_behind_a_blocking_read(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """On a server that does not hold the settle script yet (a fresh or restarted Redis), the
    first settle went out with the next blocking read and was retried only after it returned:
    here the read blocks for 10 s, and the signal must be PROCESSED well before."""
    async with Hivebus.connect(real_server.url, namespace=namespace, home=tmp_path,
                               read_block_ms=10_000) as hb:
        await hb.redis.script_flush()
        await hb.run(Counter("counter-1"))
        signal_id = await hb.publish("PING", {"n": 1}, to="counter-1")

        async def processed() -> bool:
            report = await hb.bus.report(signal_id)
            return report.targets[0].status.value == "PROCESSED"

        await eventually(processed, 8, "the signal to be PROCESSED")  # below the read's 10 s block


EMBEDDING = '''
import anyio
from hivebus.agents.runtime import Agent, Context, handles
from hivebus.facade import Hivebus
from hivebus.domain.models import Signal

class Echo(Agent):
    agent_type = "echo"

    @handles("PING")
    async def on_ping(self, signal: Signal, ctx: Context) -> None:
        await self.memory.remember("ping", "seen", score=0.5)

async def main() -> None:
    async with Hivebus.connect() as hb:
        await hb.run(Echo("echo-1"))
        await hb.publish("PING", to="echo-1")
        with anyio.fail_after(20):
            while not await hb.memory("echo-1").recall("seen"):
                await anyio.sleep(0.02)
anyio.run(main)
'''


def test_the_library_writes_nothing_to_stdout_or_stderr(real_server: RedisServer, namespace: str,
                                                        tmp_path: Path) -> None:
    """An embedding program that configures no logging sees no line from hivebus (agent
    started / stopped are info lines; they went to stdout before)."""
    script = tmp_path / "embed.py"
    script.write_text(EMBEDDING)
    env: dict[str, Any] = hivebus_env(real_server.url, namespace)
    env.pop("HIVEBUS_LOG_FORMAT")
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    # and it does log, to a program that asks for it
    script.write_text("import logging; logging.basicConfig(level=logging.INFO)\n" + EMBEDDING)
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "INFO:hivebus:agent started" in result.stderr, result.stderr


def readme_embedding_example() -> str:
    """The first python block under the README's "Embedding hivebus in a program" heading."""
    text = (REPO / "README.md").read_text()
    section = text.split("### Embedding hivebus in a program", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readmes_embedding_example_runs_as_written(real_server: RedisServer, namespace: str,
                                                       tmp_path: Path) -> None:
    script = tmp_path / "embedded.py"
    script.write_text(readme_embedding_example())
    env = hivebus_env(real_server.url, namespace)
    env.pop("PYTHONPATH")  # what a user has: the installed package
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "the example prints what it found"


async def test_decision_queries_span_the_archive_when_the_store_exists(
    real_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    """A decision the coordinator archived (gone from Redis) is still found by hb.decisions."""
    from hivebus.domain.decision import DecisionRecord
    from hivebus.store.sqlite import SQLiteStore

    store_path = tmp_path / "ltm.sqlite3"
    store = await SQLiteStore.open(store_path)
    archived = DecisionRecord(agent_id="counter-1", decision_type="TRADE_EXECUTION", timestamp=1.0)
    await store.archive([(archived, [])], epoch=None)
    await store.close()
    async with Hivebus.connect(real_server.url, namespace=namespace, home=tmp_path,
                               store=str(store_path)) as hb:
        recent = await hb.decisions.log_decision("counter-1", "TRADE_EXECUTION")
        found = [d.decision_id for d in await hb.decisions.query("counter-1")]
        assert found == [recent, archived.decision_id]
        assert (await hb.decisions.get(archived.decision_id)).agent_id == "counter-1"
