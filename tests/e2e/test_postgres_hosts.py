"""Two coordinators that share no disk (two homes, as on two hosts) share one PostgreSQL store:
what one learns and archives, the other's CLI sees, and its epoch fences the other's writes."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from tests.conftest import RedisServer, hivebus_argv, hivebus_env
from tests.decision_factory import write_decisions


def test_coordinators_on_two_hosts_share_the_postgresql_store(
        real_server: RedisServer, postgres_url: str, tmp_path: Path) -> None:
    namespace = f"pg{uuid.uuid4().hex[:8]}"
    expected = write_decisions(real_server.url, namespace, 600, seed=7)

    def host(name: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = hivebus_env(real_server.url, namespace, HIVEBUS_STORE=postgres_url,
                          HIVEBUS_HOME=str(tmp_path / name), HIVEBUS_PROMOTE_MIN_SAMPLES="20")
        return subprocess.run(hivebus_argv(*args), env=env, capture_output=True, text=True,
                              timeout=120, check=True)

    host("host-a", "coordinator", "--once")
    patterns = json.loads(host("host-b", "patterns", "--json").stdout)
    learned = {p["pattern_id"]: p["sample_size"] for p in patterns}
    assert learned, "host B sees no pattern host A's coordinator promoted"
    for pattern_id, samples in learned.items():
        assert samples == expected[pattern_id][0]
    status = json.loads(host("host-b", "status", "--json").stdout)
    assert status["store"]["engine"] == "postgresql"
    assert status["store"]["highest_epoch"] >= 1
    assert status["store"]["archived_decisions"] > 0  # the old half, archived by host A
    assert not (tmp_path / "host-a" / "ltm.sqlite3").exists()
    assert not (tmp_path / "host-b" / "ltm.sqlite3").exists()
    first_epoch = status["store"]["highest_epoch"]
    host("host-b", "coordinator", "--once")  # a later leader on the other host: a higher epoch
    again = json.loads(host("host-a", "status", "--json").stdout)
    assert again["store"]["highest_epoch"] > first_epoch
    assert {p["pattern_id"]: p["sample_size"] for p in
            json.loads(host("host-a", "patterns", "--json").stdout)} == learned  # counted once
