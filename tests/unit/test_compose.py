"""docker-compose.yml cannot run here (no Docker engine); check it is valid and matches the CLI."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from hivebus.cli.main import build_parser
from tests.conftest import REPO

COMPOSE = REPO / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_redis_service_has_aof_and_healthcheck(compose: dict[str, Any]) -> None:
    """Redis runs with AOF on and a healthcheck the others wait for."""
    redis = compose["services"]["redis"]
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert redis["healthcheck"]["test"][-1] == "ping"


def test_every_service_command_parses_with_the_cli(compose: dict[str, Any]) -> None:
    """Each hivebus service runs a command the CLI accepts, against the redis service."""
    parser = build_parser(complete=True)
    hivebus_services = {n: s for n, s in compose["services"].items() if n != "redis"}
    for name, service in hivebus_services.items():
        command = service["command"]
        assert command[0] == "hivebus", name
        parser.parse_args(command[1:])  # exits (fails the test) if the CLI rejects it
        assert service["environment"]["HIVEBUS_REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_desk_agents_are_separate_services(compose: dict[str, Any]) -> None:
    """The coordinator and each desk agent are services of their own."""
    runs = {tuple(s["command"][1:4]) for s in compose["services"].values()}
    for agent in ("market-hunter", "risk-manager", "trade-executor"):
        assert ("agent", "run", agent) in runs
    assert ("coordinator",) in {tuple(s["command"][1:2]) for s in compose["services"].values()}


def test_store_volume_is_shared(compose: dict[str, Any]) -> None:
    """Every hivebus service sees the same durable store file."""
    for name, service in compose["services"].items():
        if name == "redis":
            continue
        assert service["environment"]["HIVEBUS_STORE"] == "/data/ltm/ltm.sqlite3"
        assert "ltm-data:/data/ltm" in service["volumes"]
    assert "ltm-data" in compose["volumes"]
