"""The door half of `koe bench fuzz`: mutated messages through a running koe's sockets, with a healthy call beside.

`await fuzz_doors(per_door, seed)` starts koe in a child process (`benchserve node`: the main port with the ACS door
in echo mode and the Realtime API, the Sora door on its own port with the test service, the STT engine for the
transcription route), then starts one healthy ACS call that streams a 20 ms frame every 20 ms and counts its echoes.
Each door then gets `per_door` inputs in batches of `BATCH`, and after every batch `GET /healthz` must answer 200
within `HEALTH_TIMEOUT_S`:

- `realtime_ws`, `acs_ws`: mutated events and frames as WebSocket messages (text when they are UTF-8, binary
  otherwise), on a connection reopened whenever koe closes it;
- `websocket_frames`: mutated raw WebSocket frames (opcodes, lengths, masks, fragmentation) after a hand-made upgrade;
- `sora_h2_bodies`, `sora_h2_headers`: mutated header-framed bodies on `/test`, mutated `sora-*` request headers;
- `multipart`: mutated `multipart/form-data` bodies to `POST /v1/audio/transcriptions`.

The report counts, per door, the inputs, what koe answered (close codes, statuses), and the findings: a 5xx (other
than a 503 for a missing engine), a close with 1011 (internal error), the healthy call's echo stopping or falling
behind, `/healthz` failing, the server exiting.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from koe.bench._child import Child, write_toml
from koe.bench.fuzz._mutate import Mutator
from koe.bench.fuzz.targets import Target, targets
from koe.net.inprocess import free_port
from koe.protocols import acs
from koe.sim.sora.gateway_client import GatewayConnection
from koe.tasks import within

BATCH = 200
HEALTH_TIMEOUT_S = 5.0
INPUT_TIMEOUT_S = 5.0
FRAME_S = 0.02
ECHO_GAP_LIMIT_S = 2.0
"""The healthy call is disturbed if its echo stops for this long (it normally comes back within a frame or two)."""
INTERNAL_ERROR = 1011
RAW_ANSWER_S = 1.0
"""How long a raw-frame connection is watched for koe's close; one still open then is counted as kept open."""

Report = dict[str, Any]


def _config(folder: Path, sora_port: int) -> Path:
    many = 100_000
    return write_toml(
        folder / "koe.toml",
        {
            "server": {"log_level": "error"},
            "acs": {"mode": "echo"},
            "sora": {"port": sora_port, "service": "test", "audio_streaming_header": True},
            "limits": {
                "realtime_sessions": many,
                "acs_sessions": many,
                "sora_sessions": many,
                "idle_timeout_s": many,
                "send_stall_s": 30,
            },
        },
    )


class HealthyCall:
    """One ACS echo call streaming beside the fuzzing: a frame every 20 ms, its echo timed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sent = 0
        self.echoed = 0
        self.longest_gap_s = 0.0
        self.closed: str | None = None
        self._last_echo = 0.0
        self._task: asyncio.Future[Any] | None = None

    async def start(self) -> None:
        self._socket = await connect(self.url, additional_headers={"x-ms-call-connection-id": "healthy"})
        await self._socket.send(acs.encode(acs.AudioMetadata("healthy", 16000)))
        self._last_echo = time.monotonic()
        self._task = asyncio.ensure_future(asyncio.gather(self._send(), self._receive()))

    @property
    def gap_s(self) -> float:
        return time.monotonic() - self._last_echo

    async def _send(self) -> None:
        tone = (np.sin(np.arange(320) * 0.2) * 6000).astype("<i2").tobytes()
        frame = acs.encode(acs.AudioData(tone, acs.iso_timestamp(time.time())))
        next_at = time.monotonic()
        while self.closed is None:
            try:
                await self._socket.send(frame)
            except ConnectionClosed as exc:
                self.closed = f"send: {exc}"
                return
            self.sent += 1
            next_at += FRAME_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _receive(self) -> None:
        try:
            async for _message in self._socket:
                now = time.monotonic()
                self.longest_gap_s = max(self.longest_gap_s, now - self._last_echo)
                self._last_echo = now
                self.echoed += 1
        except ConnectionClosed as exc:
            self.closed = f"receive: {exc}"
        else:
            self.closed = "koe closed the healthy call"

    async def stop(self) -> Report:
        closed_by_koe = self.closed
        self.closed = self.closed or "stopped"
        with contextlib.suppress(Exception):
            await self._socket.close()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await within(self._task, 5)
        return {
            "frames_sent": self.sent,
            "echoes": self.echoed,
            "longest_echo_gap_ms": round(self.longest_gap_s * 1000, 1),
            "closed_during_fuzzing": closed_by_koe,
        }


async def _realtime_or_acs(url: str, mutator: Mutator, count: int, outcomes: Counter[str]) -> None:
    """`count` messages on a WebSocket, reopened whenever koe closes it; koe's answers are drained as they come."""
    sent = 0
    while sent < count:
        try:
            ws = await connect(url, max_size=None, open_timeout=INPUT_TIMEOUT_S)
        except (OSError, WebSocketException, TimeoutError) as exc:
            outcomes[f"connect failed: {type(exc).__name__}"] += 1
            sent += 1
            continue
        drain = asyncio.ensure_future(_drain(ws, outcomes))
        try:
            while sent < count and not drain.done():
                data = mutator.next()
                sent += 1
                try:
                    message: str | bytes = data.decode()
                except UnicodeDecodeError:
                    message = data
                await within(ws.send(message), INPUT_TIMEOUT_S)
        except (ConnectionClosed, TimeoutError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await within(ws.close(), INPUT_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await within(drain, INPUT_TIMEOUT_S)
        code = ws.close_code
        outcomes[f"close {code}"] += 1
        if code == INTERNAL_ERROR:
            outcomes["finding: close 1011"] += 1


async def _drain(ws: ClientConnection, outcomes: Counter[str]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            if isinstance(message, str) and '"type":"error"' in message.replace(" ", ""):
                outcomes["error event"] += 1


async def _raw_frames(port: int, path: str, mutator: Mutator, count: int, outcomes: Counter[str]) -> None:
    """Hand-made upgrades, each followed by one mutated run of raw frames; what koe sends back is classified."""

    async def one(data: bytes) -> None:
        try:
            reader, writer = await within(asyncio.open_connection("127.0.0.1", port), INPUT_TIMEOUT_S)
        except (OSError, TimeoutError):
            outcomes["connect failed"] += 1
            return
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = await within(reader.readuntil(b"\r\n\r\n"), INPUT_TIMEOUT_S)
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                outcomes["upgrade refused"] += 1
                return
            writer.write(data)
            await writer.drain()
            outcomes[_close_of(await _read_until_closed(reader, RAW_ANSWER_S))] += 1
        except TimeoutError:
            outcomes["no answer (connection kept open)"] += 1
        except (OSError, asyncio.IncompleteReadError):
            outcomes["connection reset"] += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    pending = [mutator.next() for _ in range(count)]
    for start in range(0, len(pending), 8):
        await asyncio.gather(*(one(data) for data in pending[start : start + 8]))


def _close_of(answer: bytes) -> str:
    """What the server's frames after the upgrade end with: a close frame's code, or none."""
    at = 0
    while at + 2 <= len(answer):
        opcode, size = answer[at] & 0x0F, answer[at + 1] & 0x7F
        at += 2
        if size == 126:
            size, at = int.from_bytes(answer[at : at + 2], "big"), at + 2
        elif size == 127:
            size, at = int.from_bytes(answer[at : at + 8], "big"), at + 8
        if opcode == 0x8:
            code = int.from_bytes(answer[at : at + 2], "big") if size >= 2 else 1005
            return "finding: close 1011" if code == INTERNAL_ERROR else f"close {code}"
        at += size
    return "ended without a close frame" if answer else "nothing sent"


async def _read_until_closed(reader: asyncio.StreamReader, limit_s: float) -> bytes:
    data = b""
    deadline = time.monotonic() + limit_s
    while (left := deadline - time.monotonic()) > 0:
        try:
            chunk = await within(reader.read(65536), left)
        except TimeoutError:
            break
        if not chunk:
            return data
        data += chunk
        if _close_of(data).startswith(("close ", "finding")):
            return data
    raise TimeoutError


def _ws_frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def _sora_bodies(sora_port: int, mutator: Mutator, count: int, outcomes: Counter[str], headers: bool) -> None:
    """Streams of 16 on one HTTP/2 connection each: mutated bodies (header framing) or mutated request headers."""
    base = [
        ("sora-channel-id", "sora"),
        ("sora-session-id", "S"),
        ("sora-connection-id", "C"),
        ("sora-audio-streaming-language-code", "ja-JP"),
    ]
    for start in range(0, count, 16):
        conn = await GatewayConnection.connect(f"http://127.0.0.1:{sora_port}")
        streams = []
        try:
            for _ in range(min(16, count - start)):
                data = mutator.next()
                pairs = _header_pairs(data) if headers else base
                if pairs is None:
                    outcomes["not a header list (never sent)"] += 1
                    continue
                try:
                    stream = await conn.open_stream("/test", pairs)
                    await (stream.end() if headers else stream.send(data, end=True))
                except Exception as exc:  # h2 refuses to send some names and values: the client's own check
                    outcomes[f"not sendable: {type(exc).__name__}"] += 1
                    break
                streams.append(stream)
            with contextlib.suppress(TimeoutError):
                await within(asyncio.gather(*(s.closed() for s in streams)), INPUT_TIMEOUT_S)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
        for stream in streams:
            status = stream.status
            if status is None:
                outcomes[f"no response: {(stream.error or 'none')[:60]}"] += 1
                continue
            outcomes[f"status {status}"] += 1
            if status >= 500 and status != 503:
                outcomes["finding: 5xx"] += 1


def _header_pairs(data: bytes) -> list[tuple[str, str]] | None:
    try:
        pairs = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(pairs, list):
        return None
    found = [(p[0], p[1]) for p in pairs if isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)]
    return found or None


def _multipart_seeds() -> list[bytes]:
    tone = (np.sin(np.arange(8000) * 0.05) * 8000).astype("<i2").tobytes()
    wav = b"RIFF" + (36 + len(tone)).to_bytes(4, "little") + b"WAVEfmt " + (16).to_bytes(4, "little")
    wav += (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + (16000).to_bytes(4, "little")
    wav += (32000).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    wav += b"data" + len(tone).to_bytes(4, "little") + tone
    parts = [
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n',
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="response_format"\r\n\r\nverbose_json\r\n',
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n" + wav + b"\r\n",
        b"--BOUNDARY--\r\n",
    ]
    return [b"".join(parts), b"".join(parts[2:])]


async def _multipart(base: str, mutator: Mutator, count: int, outcomes: Counter[str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for start in range(0, count, 8):
            bodies = [mutator.next() for _ in range(min(8, count - start))]
            answers = await asyncio.gather(
                *(
                    client.post(
                        "/v1/audio/transcriptions",
                        content=body,
                        headers={"content-type": "multipart/form-data; boundary=BOUNDARY"},
                    )
                    for body in bodies
                ),
                return_exceptions=True,
            )
            for answer in answers:
                if isinstance(answer, BaseException):
                    outcomes[f"request failed: {type(answer).__name__}"] += 1
                    continue
                outcomes[f"status {answer.status_code}"] += 1
                if answer.status_code >= 500 and answer.status_code != 503:
                    outcomes["finding: 5xx"] += 1


def _seeds(name: str) -> list[bytes]:
    found: dict[str, Target] = {t.name: t for t in targets() if t.name in (name,)}
    return found[name].seeds


DOORS = ("realtime_ws", "acs_ws", "websocket_frames", "sora_h2_bodies", "sora_h2_headers", "multipart")


async def fuzz_doors(
    per_door: int, seed: int = 14, progress: Callable[[str], None] | None = None, names: list[str] | None = None
) -> Report:
    say = progress or (lambda _message: None)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="koe-fuzz-doors-") as folder:
        sora_port = free_port()
        engines = "stt" if names is None or "multipart" in names else ""  # only transcriptions need a model
        child = Child("node", "{port}", str(_config(Path(folder), sora_port)), engines)
        base = f"http://127.0.0.1:{child.port}"
        ws_base = f"ws://127.0.0.1:{child.port}"
        healthy = HealthyCall(f"{ws_base}/acs/media")
        raw_seeds = [_ws_frame(s) for s in _seeds("realtime_client_events_ga")[:6]]
        raw_seeds += [_ws_frame(b"ping", 0x9), _ws_frame(b"\x03\xe8bye", 0x8), _ws_frame(b"{", fin=False)]
        doors: list[tuple[str, Mutator, Callable[[Mutator, int, Counter[str]], Awaitable[None]]]] = [
            (
                "realtime_ws",
                Mutator(_seeds("realtime_client_events_ga"), rng),
                lambda m, n, o: _realtime_or_acs(f"{ws_base}/v1/realtime?model=fuzz", m, n, o),
            ),
            (
                "acs_ws",
                Mutator(_seeds("acs_inbound"), rng),
                lambda m, n, o: _realtime_or_acs(f"{ws_base}/acs/media", m, n, o),
            ),
            (
                "websocket_frames",
                Mutator(raw_seeds, rng),
                lambda m, n, o: _raw_frames(child.port, "/v1/realtime?model=fuzz", m, n, o),
            ),
            (
                "sora_h2_bodies",
                Mutator(_seeds("sora_framing_header"), rng),
                lambda m, n, o: _sora_bodies(sora_port, m, n, o, headers=False),
            ),
            (
                "sora_h2_headers",
                Mutator(_seeds("sora_request_headers"), rng),
                lambda m, n, o: _sora_bodies(sora_port, m, n, o, headers=True),
            ),
            ("multipart", Mutator(_multipart_seeds(), rng), lambda m, n, o: _multipart(base, m, n, o)),
        ]
        report: Report = {"per_door": per_door, "batch": BATCH, "doors": {}}
        try:
            await healthy.start()
            async with httpx.AsyncClient(base_url=base, timeout=HEALTH_TIMEOUT_S) as health:
                for name, mutator, run in doors:
                    if names is not None and name not in names:
                        continue
                    outcomes: Counter[str] = Counter()
                    health_failures = 0
                    started = time.perf_counter()
                    for start in range(0, per_door, BATCH):
                        await run(mutator, min(BATCH, per_door - start), outcomes)
                        try:
                            answer = await health.get("/healthz")
                            health_failures += answer.status_code != 200
                        except httpx.HTTPError:
                            health_failures += 1
                        if healthy.gap_s > ECHO_GAP_LIMIT_S:
                            outcomes["finding: the healthy call's echo stopped"] += 1
                    findings = sum(n for key, n in outcomes.items() if key.startswith("finding"))
                    report["doors"][name] = {
                        "inputs": per_door,
                        "answers": dict(sorted(outcomes.items())),
                        "healthz_failures": health_failures,
                        "findings": findings + health_failures,
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                    say(f"{name}: {per_door} inputs, {findings + health_failures} findings")
            report["healthy_call"] = await healthy.stop()
            report["server_exited"] = child.process.poll() is not None
        finally:
            child.stop()
    return report
