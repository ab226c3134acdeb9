"""One text turn through the `azure-ai-voicelive` SDK (aiohttp underneath), as the call-center accelerator connects:
`connect(endpoint=…, credential=AzureKeyCredential(…), model=…)` with an `https://` endpoint, trusting koe's local
CA through `SSL_CERT_FILE` set before the process starts (aiohttp reads it at import). Prints one JSON line.

    KOE_BASE_URL=https://127.0.0.1:PORT KOE_API_KEY=… SSL_CERT_FILE=ca.pem \\
        python -m tests.server.realtime.voicelive_text_turn
"""

from __future__ import annotations

import asyncio
import json
import os

from azure.ai.voicelive.aio import connect
from azure.ai.voicelive.models import InputTextContentPart, Modality, RequestSession, UserMessageItem
from azure.core.credentials import AzureKeyCredential


async def main() -> dict[str, object]:
    credential = AzureKeyCredential(os.environ["KOE_API_KEY"])
    seen: list[str] = []
    text = ""
    async with connect(endpoint=os.environ["KOE_BASE_URL"], credential=credential, model="gpt-4o-mini") as conn:
        await conn.session.update(session=RequestSession(modalities=[Modality.TEXT]))
        await conn.conversation.item.create(item=UserMessageItem(content=[InputTextContentPart(text="Hello?")]))
        await conn.response.create()
        async for event in conn:
            seen.append(event.type)
            if event.type == "response.text.delta":
                text += event.delta
            elif event.type == "response.done":
                return {"status": event.response.status, "text": text, "seen": seen}
    return {"status": "closed", "text": text, "seen": seen}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(asyncio.wait_for(main(), 45))))
