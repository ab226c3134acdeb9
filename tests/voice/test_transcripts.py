"""Committed turns' transcripts, as the replies that wait for them see them."""

from __future__ import annotations

import asyncio

import pytest

from koe.engines.registry import Engines
from koe.voice.config import SessionConfig
from koe.voice.session import Session


async def test_a_reply_cancelled_while_waiting_for_transcripts_does_not_cancel_them(engines: Engines) -> None:
    session = Session(engines, SessionConfig(mode="converse"))
    transcript: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    session.transcripts._pending["item_1"] = transcript  # a committed turn still being transcribed
    first = asyncio.create_task(session.transcripts.pending())
    second = asyncio.create_task(session.transcripts.pending())
    await asyncio.sleep(0)
    first.cancel()  # that reply was interrupted
    with pytest.raises(asyncio.CancelledError):
        await first
    assert not transcript.cancelled()
    transcript.set_result(None)
    await asyncio.wait_for(second, 1)  # the other reply goes on
    await session.close()
