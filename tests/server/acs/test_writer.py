"""koe.server.acs.writer: one writer per connection, typed messages on its queue, and StopAudio overtaking audio
not yet sent (spec §3.2, §11.1 "SHOULD serialize sends"). Every frame the socket gets is read back with the
emulator's parser."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from koe.protocols.acs_outbound import OutboundAudioData, StopAudio, parse_outbound
from koe.server.acs import writer as writer_module
from koe.server.acs.writer import CHUNK_MS, OutboundWriter
from koe.server.metrics import METRICS

RATE = 16000
CHUNK_BYTES = RATE * CHUNK_MS // 1000 * 2


class _Socket:
    """A `MediaSocket` whose sends wait for `release()` (a backed-up socket), or go out at once with `instant`."""

    path = "/acs/media"
    query: Mapping[str, str] = {}
    headers: Mapping[str, str] = {}
    client_host = "127.0.0.1"

    def __init__(self, *, instant: bool = False) -> None:
        self.instant = instant
        self.frames: list[str] = []
        self._open = asyncio.Event()
        self.waiting = asyncio.Event()

    def release(self) -> None:
        self._open.set()

    async def receive(self) -> str | bytes | None:
        return None

    async def send_text(self, text: str) -> None:
        self.waiting.set()
        await self._open.wait()
        self.frames.append(text)

    def send_now(self, text: str) -> bool:
        if self.instant:
            self.frames.append(text)
        return self.instant

    async def close(self, code: int, reason: str) -> None:
        return None


def _pcm(chunks: int, value: int = 1) -> bytes:
    return bytes([value, 0]) * (CHUNK_BYTES // 2) * chunks


async def _settle() -> None:
    """Let the writer's task send what it can."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_stop_audio_overtakes_queued_audio_and_is_counted() -> None:
    socket = _Socket()
    writer = OutboundWriter(socket, RATE)
    writer.start()
    writer.audio(_pcm(5))
    await asyncio.wait_for(socket.waiting.wait(), 1)  # the first chunk is in flight, four wait behind it
    writer.stop_audio()
    writer.audio(_pcm(1, value=2))  # after the stop: plays normally (StopAudio is not sticky)
    socket.release()
    await _settle()
    await writer.close()
    messages = [parse_outbound(frame) for frame in socket.frames]
    assert messages == [OutboundAudioData(_pcm(1)), StopAudio(), OutboundAudioData(_pcm(1, value=2))]
    assert (writer.stops, writer.audio_messages) == (1, 2)
    assert writer.unsent_flushed_bytes == 4 * CHUNK_BYTES
    assert writer.sent_ms == 2 * CHUNK_MS


async def test_audio_is_cut_into_chunks_and_sent_at_once_when_the_socket_can_take_it() -> None:
    socket = _Socket(instant=True)
    writer = OutboundWriter(socket, RATE)
    writer.start()
    writer.audio(_pcm(2) + bytes(640))
    writer.stop_audio()
    await writer.close()
    messages = [parse_outbound(frame) for frame in socket.frames]
    assert messages == [OutboundAudioData(_pcm(1)), OutboundAudioData(_pcm(1)), OutboundAudioData(bytes(640)),
                        StopAudio()]  # fmt: skip
    assert (writer.audio_messages, writer.stops, writer.unsent_flushed_bytes) == (3, 1, 0)


async def test_a_stop_is_known_by_its_type_not_by_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # Render StopAudio in the Java SDK's spelling (spec §3.1): the writer must still count it as a stop.
    def java_spelling(message: OutboundAudioData | StopAudio) -> str:
        return '{"kind":"StopAudio","stopAudio":{}}' if isinstance(message, StopAudio) else "{}"

    monkeypatch.setattr(writer_module, "encode", java_spelling)
    socket = _Socket()
    writer = OutboundWriter(socket, RATE)
    writer.start()
    writer.audio(_pcm(2))
    await asyncio.wait_for(socket.waiting.wait(), 1)
    writer.stop_audio()
    socket.release()
    await _settle()
    await writer.close()
    assert socket.frames == ["{}", '{"kind":"StopAudio","stopAudio":{}}']
    assert (writer.stops, writer.audio_messages) == (1, 1)


async def test_audio_beyond_the_queue_limit_is_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MAX_PENDING_MS", 3 * CHUNK_MS)
    before = METRICS.dropped[("acs", "send_queue_full")]
    socket = _Socket()
    writer = OutboundWriter(socket, RATE)
    writer.start()
    writer.audio(_pcm(5))
    assert writer.dropped_bytes == 2 * CHUNK_BYTES
    assert METRICS.dropped[("acs", "send_queue_full")] - before == 2
    socket.release()
    await _settle()
    await writer.close()
    assert writer.audio_messages == 3


async def test_odd_length_audio_is_refused() -> None:
    writer = OutboundWriter(_Socket(instant=True), RATE)
    with pytest.raises(ValueError, match="whole 16-bit samples"):
        writer.audio(b"abc")
    await writer.close()
