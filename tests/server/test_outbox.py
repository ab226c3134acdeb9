"""The outbox's byte count: what waits for a client, in flight included, and nothing counted out twice."""

from __future__ import annotations

import asyncio

from koe.server.metrics import METRICS
from koe.server.outbox import Outbox


def _gauge() -> float:
    return METRICS.registry.get_sample_value("koe_outbound_queued_bytes", {"door": "outbox-test"}) or 0.0


async def test_giving_up_while_a_frame_is_in_flight_counts_it_out_once() -> None:
    sending = asyncio.Event()
    release = asyncio.Event()

    async def slow_send(_text: str) -> None:
        sending.set()
        await release.wait()

    before = _gauge()
    outbox = Outbox(slow_send, limit_bytes=100, stall_s=30.0, door="outbox-test")
    outbox.start()
    outbox.put("x" * 60)
    await sending.wait()  # the first frame is on its way, and still counted
    assert outbox.queued_bytes == 60
    outbox.put("y" * 60)  # 120 > 100 waiting: the outbox gives up on the client
    assert outbox.stalled.done()
    assert outbox.queued_bytes == 0
    release.set()  # the frame in flight goes out after all
    await asyncio.sleep(0.05)
    assert outbox.queued_bytes == 0
    assert _gauge() == before
    await outbox.aclose()


async def test_frames_sent_leave_the_count() -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    before = _gauge()
    outbox = Outbox(send, limit_bytes=1000, stall_s=30.0, door="outbox-test")
    outbox.start()
    for text in ("a" * 10, "b" * 20):
        outbox.put(text)
    await outbox.flush(5.0)
    assert sent == ["a" * 10, "b" * 20]
    assert outbox.queued_bytes == 0
    assert _gauge() == before
    await outbox.aclose()


async def test_aclose_returns_even_when_it_lands_as_a_send_completes() -> None:
    """Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives in the loop turn in which the awaited send
    completes. An outbox built on it then waited for its next frame forever, and its session never ended: the fuzz at
    volume found every Realtime session keeping its admission ticket. Every loop turn around the send is tried."""
    for turns in range(6):
        sent = asyncio.get_running_loop().create_future()

        async def send(_text: str, sent: asyncio.Future[None] = sent) -> None:
            await sent

        outbox = Outbox(send, limit_bytes=1000, stall_s=30.0, door="outbox-test")
        outbox.start()
        outbox.put("x")
        for _ in range(3):
            await asyncio.sleep(0)  # the frame is on its way
        sent.set_result(None)
        for _ in range(turns):
            await asyncio.sleep(0)
        closing = asyncio.ensure_future(outbox.aclose())
        done, _ = await asyncio.wait([closing], timeout=2.0)  # not wait_for: its cancel would end the hang itself
        assert done, f"aclose() hung when it came {turns} loop turns after the send completed"
