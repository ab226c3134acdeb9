"""`koe serve --workers N`: N processes serving the same ports, each a whole koe. Call `run_workers()` first.

Every listener of a worker (the main port, the Sora door's port, the ACS media port) binds with `SO_REUSEPORT`, and
the kernel spreads new connections over the workers; a connection stays with the worker that accepted it for its
whole life, as a call's WebSocket or a Sora node's HTTP/2 connection must. Before starting any worker, this process
binds each port once itself (with `SO_REUSEPORT`, without listening): a port that another program holds fails here,
with one message, and a port 0 becomes a real one that every worker then shares. It holds those sockets until the
workers end, so the ports stay koe's.

Each worker loads its own models (docs/cluster.md, "Workers": neither CTranslate2, onnxruntime nor llama.cpp share
a loaded model between processes), or points at a model node (`stt/tts/llm.backend = "remote"`). With
`cluster.redis_url`, each worker is a cluster node of its own (`cluster.node_id` gains `-w<index>`); without it,
each worker has its own call registry and its own limits. SIGTERM or SIGINT (Ctrl-C) here stops every worker; a
worker that exits on its own stops the others, and `koe serve` exits with status 1 for the supervisor to restart.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess

from koe.config import Settings
from koe.net.reuseport import shared_socket

STOP_WAIT_S = 30.0
"""How long the workers get to close their calls after SIGTERM before they are killed."""
POLL_S = 0.2


def run_workers(settings: Settings, count: int, progress: Callable[[str], None]) -> int:
    """Serve with `count` worker processes until SIGTERM or SIGINT; the exit status for `koe serve`."""
    from koe.server.tls import TlsSetupError, effective_tls

    try:  # the local CA and certificate, made here once when missing: workers making them at once would race
        settings = effective_tls(settings).settings
    except (TlsSetupError, OSError) as exc:
        progress(f"cannot serve TLS: {exc}")
        return 1
    if settings.server.public:  # the host it listens on is decided here, where the ports are checked
        from koe.server.public import prepare_public

        settings, refusals = prepare_public(settings)
        for reason in refusals:
            progress(f"refusing to start with --public: {reason}")
        if refusals:
            return 1
    with _reserved_ports(settings, progress) as shared:
        if shared is None:
            return 1
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no loop, threads or models inherited
        workers = [
            context.Process(target=_worker, args=(_worker_settings(shared, index), index), name=f"koe-worker-{index}")
            for index in range(count)
        ]
        stopping = False

        def stop(_signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for worker in workers:
                worker.start()
            progress(f"{count} workers on port {shared.server.port}: pids {', '.join(str(w.pid) for w in workers)}")
            if shared.cluster.redis_url is None:
                progress(
                    "without cluster.redis_url each worker has its own calls (/v1/calls, their events, Call "
                    "Automation's media/stop and hangup) and its own limits: see docs/cluster.md, Workers"
                )
            failed = _watch(workers, lambda: stopping, progress)
        finally:
            _stop(workers)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if failed else 0


def _worker(settings: Settings, index: int) -> None:
    from koe.server.run import run_server

    pid = os.getpid()

    def progress(message: str) -> None:
        print(f"koe[worker {index}, pid {pid}]: {message}", file=sys.stderr, flush=True)

    sys.exit(run_server(settings, progress, reuse_port=True))


def _worker_settings(settings: Settings, index: int) -> Settings:
    """A worker's settings: the shared ports, and a cluster node name of its own."""
    cluster = settings.cluster
    if cluster.redis_url is None or not cluster.node_id:
        return settings  # no cluster, or a node id made per process (the host name and a random suffix)
    node = cluster.model_copy(update={"node_id": f"{cluster.node_id}-w{index}"})
    return settings.model_copy(update={"cluster": node})


@contextlib.contextmanager
def _reserved_ports(settings: Settings, progress: Callable[[str], None]) -> Iterator[Settings | None]:
    """The settings with every port koe listens on bound here first (a port 0 made real); None when one is taken."""
    server, sora, acs = settings.server, settings.sora, settings.acs
    wanted = {"server.port": (server.host, server.port)}
    if sora.enabled:
        wanted["sora.port"] = (sora.host, sora.port)
        if sora.exporter_port is not None:
            wanted["sora.exporter_port"] = (sora.host, sora.exporter_port)
    if acs.enabled and acs.media_port:
        wanted["acs.media_port"] = (acs.media_host or server.host, acs.media_port)
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for name, (host, port) in wanted.items():
            try:
                sock = shared_socket(host, port)
            except OSError as exc:
                progress(f"cannot listen on {host}:{port} ({name}): {exc}; is another program using it?")
                yield None
                return
            held.append(sock)
            ports[name] = sock.getsockname()[1]
        yield settings.model_copy(
            update={
                "server": server.model_copy(update={"port": ports["server.port"]}),
                "sora": sora.model_copy(
                    update={
                        "port": ports.get("sora.port", sora.port),
                        "exporter_port": ports.get("sora.exporter_port", sora.exporter_port),
                    }
                ),
                "acs": acs.model_copy(update={"media_port": ports.get("acs.media_port", acs.media_port)}),
            }
        )
    finally:
        for sock in held:
            sock.close()


def _watch(workers: Sequence[BaseProcess], stopping: Callable[[], bool], progress: Callable[[str], None]) -> bool:
    """Wait until asked to stop or a worker ends; whether a worker ended on its own."""
    while not stopping():
        ended = [w for w in workers if not w.is_alive()]
        if ended:
            for worker in ended:
                progress(f"{worker.name} (pid {worker.pid}) exited with status {worker.exitcode}: stopping the others")
            return True
        time.sleep(POLL_S)
    return False


def _stop(workers: Sequence[BaseProcess]) -> None:
    """SIGTERM to every worker still running, then SIGKILL to any left after `STOP_WAIT_S`."""
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join()
