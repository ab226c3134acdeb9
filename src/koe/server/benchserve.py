"""The server side of `koe bench`: one of koe's listeners in a child process, set up as a benchmark asks.

`koe bench …` never imports the server (it drives koe from outside, as a client would). It starts
`python -m koe.server.benchserve KIND ARGS…` through `koe.bench._child.Child`, which waits for the `READY <port>`
line this module prints once the listener accepts connections, reads the child's CPU time, and stops it with
SIGTERM. The kinds:

- `acs STACK PORT MODE [PROFILE]`: the ACS door in `MODE` on one WebSocket stack (`hypercorn`, the main port's;
  `uvicorn-websockets`, `uvicorn-wsproto`; or `picows`, the media listener `koe serve` starts on `acs.media_port`),
  with a cProfile of the whole run written to `PROFILE` when given;
- `sora SERVICE PORT [WARM_AUDIO]`: the Sora gateway with one service (`koe`, `koe-final` for finals only, `test`,
  …), every STT worker first warmed on the `WARM_AUDIO` file when given;
- `sora-hypercorn PORT`: the `test` service's job as a plain ASGI app on Hypercorn (h2c), for the listener comparison;
- `realtime PORT [CONFIG]`: the whole app on the main port (what `koe serve` runs, with the config file when given),
  for `koe bench latency`;
- `node PORT CONFIG [ENGINES]`: what `koe serve` runs with the config file (the whole app on the main port, and the
  Sora door on `sora.port` when enabled), with only the engines named (comma-separated; none by default): a cluster
  node for `koe bench cluster` and the cluster tests.
"""

from __future__ import annotations

import asyncio
import cProfile
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from koe.audio.files import read_audio
from koe.config import Settings, load_settings
from koe.engines.registry import Engines, load_engines

READY = "READY"


NO_LIMITS: dict[str, Any] = {
    "limits": {"realtime_sessions": None, "acs_sessions": None, "sora_sessions": None, "idle_timeout_s": None},
    "stt": {"max_streams": None},
}
"""The capacity benchmarks measure how far a door goes: koe's admission limits (`koe.server.limits`) are lifted."""


def _ready(port: int) -> None:
    print(READY, port, flush=True)


async def _until_sigterm() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


def acs(stack: str, port: int, mode: str, profile: str | None = None) -> None:
    from koe.server.app import create_app

    settings = load_settings(overrides={"acs": {"mode": mode}, "server": {"log_level": "warning"}, **NO_LIMITS})
    engines = load_engines(settings, ["vad", "stt"]) if mode == "transcribe" else Engines()
    app = create_app(settings, engines)
    profiler = cProfile.Profile() if profile else None

    async def main() -> None:
        if profiler is not None:
            profiler.enable()
        if stack == "picows-bare":
            bare = await _bare_picows_echo(port)
            _ready(port)
            await _until_sigterm()
            bare.close()
        elif stack == "picows":
            from koe.server.acs.listener import AcsMediaListener

            listener = await AcsMediaListener.start(app.state.acs, "127.0.0.1", port)
            _ready(port)
            await _until_sigterm()
            await listener.close()
        elif stack == "hypercorn":
            await _hypercorn(app, port)
        else:
            import uvicorn

            server = uvicorn.Server(
                uvicorn.Config(
                    app, host="127.0.0.1", port=port, ws=stack.split("-", 1)[1], http="h11", log_level="warning",
                    lifespan="off",
                )
            )  # fmt: skip
            task = asyncio.create_task(server.serve())
            await _until_listening(port)
            _ready(port)
            await _until_sigterm()
            server.should_exit = True
            await task

    asyncio.run(main())
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)


async def _bare_picows_echo(port: int) -> asyncio.Server:
    """The relay's floor: picows answering each text frame with the same bytes (`data` renamed to `Data`, as the
    load generator reads koe's outbound frames) and no koe work at all; one receive and one send per frame."""
    from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                transport.send(WSMsgType.TEXT, frame.get_payload_as_bytes().replace(b'"data":"', b'"Data":"', 1))
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()

    return await ws_create_server(lambda _request: Echo(), "127.0.0.1", port)


async def _hypercorn(app: Any, port: int, *, h2_streams: int | None = None) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from koe.net.close_frames import report_clean_closes

    report_clean_closes()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.websocket_ping_interval = None
    if h2_streams is not None:
        config.h2_max_concurrent_streams = h2_streams
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    task = asyncio.get_running_loop().create_task(serve(app, config, shutdown_trigger=stop.wait))
    await _until_listening(port)
    _ready(port)
    await task


async def _until_listening(port: int, timeout_s: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)
        else:
            writer.close()
            return


def sora(service: str, port: int, warm_audio: str | None = None) -> None:
    from koe.config import SoraSettings
    from koe.server.sora.gateway import SoraGateway

    final_only = service == "koe-final"  # Suzu's example config: final_result_only = true
    service = "koe" if final_only else service
    base = Settings()
    engines = load_engines(base, ["vad", "stt"]) if service == "koe" else None
    settings = SoraSettings.model_validate(
        {"port": port, "service": service, "audio_streaming_header": True, "partial_results": not final_only}
    )

    async def main() -> None:
        if engines is not None and warm_audio:
            await _warm_stt(engines, base.stt.workers, warm_audio)
        gateway = SoraGateway(settings, engines, access=Settings(sora=settings, **NO_LIMITS))
        await gateway.start()
        _ready(gateway.port)
        await _until_sigterm()
        await gateway.close()

    asyncio.run(main())


async def _warm_stt(engines: Engines, workers: int, audio: str) -> None:
    """A model's first transcriptions are several times slower than the rest: run them before measuring."""
    stt = engines.require("stt")
    clip = read_audio(audio, 16000)
    for _ in range(2):
        await asyncio.gather(*(stt.transcribe(clip) for _ in range(workers)))


def sora_hypercorn(port: int) -> None:
    from koe.protocols.sora import HeaderPacketReader
    from koe.protocols.sora_results import encode, service_test_result

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        reader = HeaderPacketReader()
        while True:
            message = await receive()
            for packet in reader.feed(message.get("body", b"")):
                body = encode(service_test_result(len(packet.payload)))
                await send({"type": "http.response.body", "body": body, "more_body": True})
            if not message.get("more_body"):
                break
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # 250 streams, as koe's listener (and Suzu) allow; Hypercorn's default is 100.
    asyncio.run(_hypercorn(app, port, h2_streams=250))


def realtime(port: int, config_file: str | None = None) -> None:
    from pathlib import Path

    from koe.server.app import create_app

    settings = load_settings(Path(config_file) if config_file else None)
    engines = load_engines(settings)
    asyncio.run(_hypercorn(create_app(settings, engines), port))


def node(port: int, config_file: str, engine_kinds: str = "") -> None:
    from pathlib import Path

    from koe.server.app import create_app
    from koe.server.sora.gateway import SoraGateway

    settings = load_settings(Path(config_file), overrides={"server": {"port": port}})
    kinds: list[Any] = [kind for kind in engine_kinds.split(",") if kind]
    engines = load_engines(settings, kinds) if kinds else Engines()
    app = create_app(settings, engines)

    async def main() -> None:
        from koe.tasks import describe_tasks

        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR1, lambda: print(describe_tasks(), file=sys.stderr, flush=True)
        )
        gateway = None
        if settings.sora.enabled:
            gateway = SoraGateway(settings.sora, engines, app.state.calls, access=settings)
            await gateway.start()
            app.state.sora = gateway
        try:
            await _hypercorn(app, port)
        finally:
            if gateway is not None:
                await gateway.close()

    asyncio.run(main())


def main(argv: list[str]) -> None:
    kind, args = argv[0], argv[1:]
    if kind == "acs":
        acs(args[0], int(args[1]), args[2], args[3] if len(args) > 3 else None)
    elif kind == "sora":
        sora(args[0], int(args[1]), args[2] if len(args) > 2 else None)
    elif kind == "sora-hypercorn":
        sora_hypercorn(int(args[0]))
    elif kind == "realtime":
        realtime(int(args[0]), args[1] if len(args) > 1 else None)
    elif kind == "node":
        node(int(args[0]), args[1], args[2] if len(args) > 2 else "")
    else:
        sys.exit(f"usage: python -m koe.server.benchserve acs|sora|sora-hypercorn|realtime|node …, not {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
