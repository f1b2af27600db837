"""A real Redis Cluster for the test session: three masters and three replicas on free loopback
ports (each port's cluster bus, port + 10000, free too), joined with ``redis-cli --cluster
create``, stopped and removed at the end of the session."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis as sync_redis
from redis.crc import key_slot

from hivebus.infra.managed_redis import candidates, find_cli

NODE_TIMEOUT_MS = 2000  # how long a silent master has before its replica takes over


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` ports whose cluster bus port (+10000) is free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 < 65536 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


@dataclass
class ClusterNode:
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> sync_redis.Redis:
        return sync_redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)


@dataclass
class RedisCluster:
    """A local 3-master, 3-replica cluster the test session started."""

    binary: str
    cli: str
    dir: Path
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def live_nodes(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.process.poll() is None]

    def state_ok(self) -> bool:
        """Every live node says cluster_state:ok and sees every slot served."""
        try:
            for node in self.live_nodes():
                info = node.client().cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
        except sync_redis.RedisError:
            return False
        return True

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.live_nodes() if n.client().info("replication")["role"] == "master"]

    def slots_of(self, node: ClusterNode) -> set[int]:
        """The hash slots ``node`` serves as a master (none for a replica)."""
        ranges = node.client().execute_command("CLUSTER", "SLOTS")
        return {slot for first, last, primary, *_ in ranges if int(primary[1]) == node.port
                for slot in range(int(first), int(last) + 1)}

    def key_on(self, node: ClusterNode, prefix: str = "k") -> str:
        """A key (``prefix`` and a number) whose slot ``node`` serves."""
        slots = self.slots_of(node)
        return next(f"{prefix}{i}" for i in range(100_000) if key_slot(f"{prefix}{i}".encode()) in slots)

    def wait_ok(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state_ok() and all(
                    n.client().info("replication").get("master_link_status", "up") == "up"
                    for n in self.live_nodes()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the cluster did not reach cluster_state:ok within {timeout} s")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_cluster() -> RedisCluster:
    """Start six nodes and join them; raises RuntimeError (with the reason) when it cannot."""
    servers = candidates()
    if not servers:
        raise RuntimeError("no redis-server 6.2+ here")
    binary = servers[0].server
    cli = find_cli(binary)
    if cli is None:
        raise RuntimeError(f"no redis-cli beside {binary} to create a cluster with")
    cluster = RedisCluster(binary, cli, Path(tempfile.mkdtemp(prefix="hivebus-cluster-")))
    try:
        for port in free_cluster_ports(6):
            workdir = cluster.dir / str(port)
            workdir.mkdir()
            process = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cluster.nodes.append(ClusterNode(port, process))
        deadline = time.monotonic() + 15
        while not all(_answers(n) for n in cluster.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster nodes did not start")
            time.sleep(0.02)
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-300:]}")
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _answers(node: ClusterNode) -> bool:
    try:
        return bool(node.client().ping())
    except sync_redis.RedisError:
        return False
