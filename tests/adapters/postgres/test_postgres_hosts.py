"""Two hosts on one PostgreSQL, one of them cut off mid-run (MISSION C2; DESIGN
"Delivery across processes and hosts").

The second host is a network namespace (``ip netns``) joined to this one by a veth pair;
it reaches the database through ``socat`` on the veth address (PostgreSQL here listens
on 127.0.0.1 only). Cutting the link freezes that host's connections, as a network
partition does: its jobs are rescued by the worker on this host once their leases
expire, and when the link comes back its late finishes are refused by their fencing
tokens. Needs root (namespaces, links); skips otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

asyncpg = pytest.importorskip("asyncpg", reason="needs the postgres extra")

import hyperqueue as hq  # noqa: E402

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from pg_app import make_queue  # noqa: E402

pytestmark = pytest.mark.anyio
SERVER = "postgresql://postgres@127.0.0.1:5432"
LEASE = "2"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def other_host() -> Iterator[tuple[str, str]]:
    """(namespace, address of this host as the namespace sees it), with a socat relay
    from that address to PostgreSQL."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("socat") is None:
        pytest.skip("needs root, ip and socat to make a second host with a network namespace")
    tag = secrets.token_hex(2)
    ns, outer, inner = f"hq{tag}", f"hqa{tag}", f"hqb{tag}"
    octet = int(tag, 16) % 200 + 20
    here, there = f"10.{octet}.77.1", f"10.{octet}.77.2"
    try:
        sh("ip", "netns", "add", ns)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot make a network namespace: {exc.stderr.decode().strip()}")
    relay = None
    try:
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        sh("ip", "link", "set", inner, "netns", ns)
        sh("ip", "addr", "add", f"{here}/24", "dev", outer)
        sh("ip", "link", "set", outer, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{there}/24", "dev", inner)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        relay = subprocess.Popen(
            ["socat", f"TCP-LISTEN:15432,bind={here},fork,reuseaddr", "TCP:127.0.0.1:5432"],
            stderr=subprocess.DEVNULL,
        )
        yield ns, here
    finally:
        if relay is not None:
            relay.kill()
            relay.wait(5)
        subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
async def database() -> AsyncIterator[str]:
    try:
        admin = await asyncpg.connect(f"{SERVER}/test", timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({exc})")
    name = f"hq_hosts_{secrets.token_hex(4)}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield name
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


@contextmanager
def worker(dsn: str, log: Path, *prefix: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "HQ_DSN": dsn, "HQ_LEASE": LEASE, "HQ_LOG": str(log)}
    proc = subprocess.Popen(
        [*prefix, sys.executable, str(HERE / "pg_app.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def runs(log: Path) -> list[tuple[str, int, str]]:
    if not log.exists():
        return []
    return [(k, int(p), j) for k, p, j in (line.split() for line in log.read_text().splitlines())]


async def test_a_host_cut_off_mid_run_loses_its_jobs_to_the_other_and_its_late_finishes(
    tmp_path: Path, database: str, other_host: tuple[str, str]
) -> None:
    ns, here = other_host
    log = tmp_path / "runs.log"
    async with make_queue(f"{SERVER}/{database}") as queue:
        slow = queue.tasks["slow"]
        with anyio.fail_after(60):
            with worker(
                f"postgresql://postgres@{here}:15432/{database}", log, "ip", "netns", "exec", ns
            ) as far:
                assert far.stdout is not None
                assert await anyio.to_thread.run_sync(far.stdout.readline) == "ready\n"
                jobs = [await slow.enqueue(3.0) for _ in range(4)]
                while len({j for k, p, j in runs(log) if p == far.pid}) < 4:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                outer = f"hqa{ns[2:]}"
                sh("ip", "link", "set", outer, "down")  # the partition
                with worker(f"{SERVER}/{database}", log) as near:
                    done = [
                        await queue.wait(job.id, timeout=40) for job in jobs
                    ]  # rescued after the lease, run here
                    assert all(d.status is hq.JobStatus.COMPLETED for d in done), done
                    assert all(d.result == near.pid for d in done), done
                    assert all(d.rescues == 1 and d.attempts == 1 for d in done), done
                    sh("ip", "link", "set", outer, "up")  # the far host comes back
                    await anyio.sleep(4.0)  # its jobs end there; their finishes are late
                    after = [await queue.get(job.id) for job in jobs]
                    assert after == done, "a late finish from the cut-off host changed nothing"
