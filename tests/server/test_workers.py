"""`koe serve --workers N` (`koe.server.workers`): N processes share every port koe listens on (the main port, the
Sora door's, the ACS media port) through SO_REUSEPORT, new connections reach each of them, SIGTERM or Ctrl-C stops
them all, and a port another program holds stops koe before any worker starts. The workers run with no models
(STT, TTS and the LLM remote, at an address nothing answers), so only the VAD loads."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect

from koe.bench._redis import RedisServer
from koe.config import load_settings
from koe.net.inprocess import free_port
from koe.protocols.acs import AudioData, AudioMetadata, encode, iso_timestamp
from koe.server.workers import _worker_settings

WORKERS = 2
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 40.0
REPO = Path(__file__).resolve().parents[2]


def _environment(port: int, sora_port: int, media_port: int) -> dict[str, str]:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    env = {name: value for name, value in os.environ.items() if not name.startswith("KOE_")}
    env.update(
        {
            "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{env.get('PYTHONPATH', '')}",
            "KOE_SERVER__PORT": str(port),
            "KOE_SERVER__LOG_LEVEL": "warning",
            "KOE_SORA__PORT": str(sora_port),
            "KOE_SORA__SERVICE": "test",
            "KOE_ACS__MEDIA_PORT": str(media_port),
            "KOE_ACS__MODE": "echo",
            **{f"KOE_{kind}__BACKEND": "remote" for kind in ("STT", "TTS", "LLM")},
            **{f"KOE_{kind}__BASE_URL": nowhere for kind in ("STT", "TTS", "LLM")},
        }
    )
    return env


def _serve(env: dict[str, str], cwd: Path, *flags: str) -> subprocess.Popen[str]:
    """`koe serve --workers 2` in a session of its own, its messages in cwd/serve.log."""
    command = [sys.executable, "-m", "koe", "serve", "--workers", str(WORKERS), *flags]
    with (cwd / "serve.log").open("w") as log:
        return subprocess.Popen(command, env=env, cwd=cwd, stderr=log, text=True, start_new_session=True)


def _workers(cwd: Path) -> set[int]:
    """The worker pids `koe serve` announced ("2 workers on port …: pids 1601, 1602"), once it has."""
    for line in (cwd / "serve.log").read_text().splitlines():
        if line.startswith("koe: ") and ": pids " in line:
            return {int(pid) for pid in line.rsplit(": pids ", 1)[1].split(", ")}
    return set()


def _listening_ports(pid: int) -> set[int]:
    """The TCP ports process `pid` has a listening socket on (from /proc: its descriptors and the kernel's table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_target = os.readlink(fd) if fd.is_symlink() else ""
        if with_target.startswith("socket:["):
            inodes.add(with_target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _pids_answering(port: int, attempts: int = 60) -> set[int]:
    """The pids /healthz reports over `attempts` new connections."""
    pids = set()
    for _ in range(attempts):
        with httpx.Client(timeout=10) as client:  # a new connection each time
            pids.add(client.get(f"http://127.0.0.1:{port}/healthz").json()["pid"])
        if len(pids) == WORKERS:
            break
    return pids


@pytest.fixture
def ports() -> tuple[int, int, int]:
    return free_port(), free_port(), free_port()


def _wait_until_served(master: subprocess.Popen[str], cwd: Path, ports: tuple[int, ...]) -> set[int]:
    """The workers, once each listens on every one of `ports`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert master.poll() is None, (cwd / "serve.log").read_text()
        workers = _workers(cwd)
        with contextlib.suppress(FileNotFoundError):  # a worker still starting has no /proc entries to read yet
            if workers and all(set(ports) <= _listening_ports(pid) for pid in workers):
                return workers
        time.sleep(0.3)
    raise AssertionError(f"the workers did not start listening: {(cwd / 'serve.log').read_text()}")


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_workers_share_every_port_and_stop_together(ports: tuple[int, int, int], tmp_path: Path, stop: str) -> None:
    port, sora_port, media_port = ports
    master = _serve(_environment(port, sora_port, media_port), tmp_path)
    try:
        # every worker listens on every port: a second one could not bind it without SO_REUSEPORT
        workers = _wait_until_served(master, tmp_path, ports)
        assert len(workers) == WORKERS
        assert _pids_answering(port) == workers  # the kernel gave connections to each
        with (
            socket.create_connection(("127.0.0.1", sora_port), timeout=5),
            socket.create_connection(("127.0.0.1", media_port), timeout=5),
        ):
            pass
        if stop == "SIGTERM":
            master.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C: SIGINT to the whole foreground process group
            os.killpg(master.pid, signal.SIGINT)
        assert master.wait(STOP_TIMEOUT_S) == 0
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait()


def test_tls_workers_serve_the_one_certificate_made_before_they_start(
    ports: tuple[int, int, int], tmp_path: Path
) -> None:
    # The local CA is made by `koe serve` itself, once: workers making it at once would each sign their own.
    env = {**_environment(*ports), "XDG_DATA_HOME": str(tmp_path / "data")}
    master = _serve(env, tmp_path, "--tls")
    try:
        workers = _wait_until_served(master, tmp_path, ports)
        ca = tmp_path / "data" / "koe" / "tls" / "ca.pem"
        answered = set()
        for _ in range(60):
            with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=10) as client:
                answered.add(client.get(f"https://127.0.0.1:{ports[0]}/healthz").json()["pid"])
            if answered == workers:
                break
        assert answered == workers
        master.send_signal(signal.SIGTERM)
        assert master.wait(STOP_TIMEOUT_S) == 0
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait()


def test_a_port_in_use_stops_koe_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        master = _serve(_environment(port, free_port(), free_port()), tmp_path)
        master.wait(60)
    err = (tmp_path / "serve.log").read_text()
    assert master.returncode == 1 and not _workers(tmp_path)
    assert f"cannot listen on 127.0.0.1:{port} (server.port)" in err and "another program" in err


def test_with_redis_every_worker_shows_every_workers_calls(ports: tuple[int, int, int], tmp_path: Path) -> None:
    redis = RedisServer()
    redis.start()
    port, sora_port, media_port = ports
    env = {**_environment(port, sora_port, media_port), "KOE_CLUSTER__REDIS_URL": redis.url}
    master = _serve({**env, "KOE_CLUSTER__NODE_ID": "door"}, tmp_path)
    try:
        workers = _wait_until_served(master, tmp_path, ports)
        asyncio.run(_one_call_seen_by_every_worker(port, media_port, workers))
        master.send_signal(signal.SIGTERM)
        assert master.wait(STOP_TIMEOUT_S) == 0
    finally:
        if master.poll() is None:
            os.killpg(master.pid, signal.SIGKILL)
            master.wait()
        redis.close()


async def _one_call_seen_by_every_worker(port: int, media_port: int, workers: set[int]) -> None:
    """An ACS call on whichever worker the media port gives it to, listed by /v1/calls on each worker (new
    connections until both have answered: the kernel spreads them over the workers)."""
    call_id = "call-through-a-worker"
    url = f"ws://127.0.0.1:{media_port}/acs/media?mode=echo"
    async with ws_connect(url, additional_headers={"x-ms-call-connection-id": call_id}) as media:
        await media.send(encode(AudioMetadata(call_id, 16000)))
        await media.send(encode(AudioData(bytes(640), iso_timestamp(time.time()))))
        answered: set[int] = set()
        nodes: set[str] = set()
        deadline = time.monotonic() + 20
        while answered != workers:
            assert time.monotonic() < deadline, (answered, nodes)
            async with httpx.AsyncClient(timeout=10) as client:  # a new connection: either worker, for both
                health = (await client.get(f"http://127.0.0.1:{port}/healthz")).json()
                calls = (await client.get(f"http://127.0.0.1:{port}/v1/calls")).json()["calls"]
            live = {call["id"]: call for call in calls}
            if call_id in live:  # through Redis the other worker may take a moment
                answered.add(health["pid"])
                nodes.add(live[call_id]["node"])
            await asyncio.sleep(0.05)
    assert nodes <= {"door-w0", "door-w1"} and len(nodes) == 1  # held by one worker, named after it


def test_public_without_keys_stops_koe_before_any_worker_starts(tmp_path: Path) -> None:
    master = _serve(_environment(free_port(), free_port(), free_port()), tmp_path, "--public")
    master.wait(60)
    said = (tmp_path / "serve.log").read_text()
    assert master.returncode == 1 and not _workers(tmp_path)
    assert "refusing to start with --public: no API keys are configured" in said


def test_each_worker_is_a_cluster_node_of_its_own() -> None:
    settings = load_settings(overrides={"cluster": {"redis_url": "redis://127.0.0.1:6379/0", "node_id": "door-a"}})
    assert [_worker_settings(settings, i).cluster.node_id for i in range(2)] == ["door-a-w0", "door-a-w1"]
    unnamed = load_settings(overrides={"cluster": {"redis_url": "redis://127.0.0.1:6379/0"}})
    assert _worker_settings(unnamed, 1).cluster.node_id == ""  # each process makes a name of its own
    assert _worker_settings(load_settings(), 0).cluster.redis_url is None
