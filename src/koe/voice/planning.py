"""Combining a session's settings with one response's overrides into a `ResponsePlan`.

Call `plan_response(context, options)` right before a response starts: it reads the session's conversation (through
its `VoiceContext`) as it is at that moment, transcripts included, picks the voice (the one asked for, else the voice
of the session's language; a session that named no voice, and detects its language or names none, lets the reply's
first clause pick it by its script), the tools and the token limits (the client's cap, and koe's own spoken-turn cap
unless the client's is shorter), and writes the system prompt. The prompt keeps the newest turns that fit the
session's `prompt_chars`.
"""

from __future__ import annotations

from koe.engines.base import ChatMessage
from koe.engines.voice_names import choose_voice
from koe.languages import AUTO
from koe.voice._context import VoiceContext
from koe.voice.config import ResponseOptions
from koe.voice.conversation import Item, chat_messages, new_id
from koe.voice.response import ResponsePlan


def plan_response(
    context: VoiceContext, options: ResponseOptions | None, pending_user_text: str | None = None
) -> ResponsePlan:
    config = context.config
    opts = options or ResponseOptions()
    instructions = opts.instructions if opts.instructions is not None else config.instructions
    if instructions is None:
        instructions = context.default_instructions
    if opts.additional_instructions:
        instructions = f"{instructions}\n\n{opts.additional_instructions}".strip()
    tools = opts.tools if opts.tools is not None else config.tools
    choice = opts.tool_choice if opts.tool_choice is not None else config.tool_choice
    if choice == "none":
        tools = ()
    messages = chat_messages(_input_items(context, opts), instructions)
    if pending_user_text is not None:  # a speculative reply answers a turn that is not committed yet
        messages.append(ChatMessage("user", pending_user_text))
    messages = newest_within(messages, context.limits.prompt_chars)
    tts = context.engines.tts
    requested = opts.voice or config.voice
    detects = config.language is not None and config.language.strip().lower() == AUTO
    # No voice named: the voice of the session's language (Kokoro for Japanese, Piper for English).
    spoken_in = None if detects else config.language
    voice = choose_voice(tts, requested, spoken_in).voice if tts is not None else requested or ""
    output_audio = opts.output_audio if opts.output_audio is not None else config.output_audio
    client_cap = opts.max_output_tokens or config.max_output_tokens
    turn_tokens = context.turn_tokens
    if client_cap is not None and turn_tokens is not None and client_cap <= turn_tokens:
        turn_tokens = None  # the client's own, shorter cap decides (and ends the reply `incomplete`)
    return ResponsePlan(
        response_id=new_id("resp"),
        messages=messages,
        tools=tuple(tools),
        temperature=opts.temperature if opts.temperature is not None else config.temperature,
        max_output_tokens=client_cap,
        output_audio=output_audio and tts is not None,
        voice=voice,
        voice_by_text=tts is not None and not requested and (config.language is None or detects),
        output_rate=config.output_rate,
        in_conversation=opts.in_conversation,
        metadata=opts.metadata,
        cache_key=context.id,
        tool_choice=choice if tools else "auto",
        request_id=opts.request_id,
        turn_tokens=turn_tokens,
    )


def _input_items(context: VoiceContext, opts: ResponseOptions) -> list[Item]:
    if opts.input_item_ids is not None:
        found = {item.id: item for item in context.conversation.items}
        items = [found[item_id] for item_id in opts.input_item_ids if item_id in found]
    else:
        items = list(context.conversation.items)
    items.extend(item for item in opts.extra_input if isinstance(item, Item))
    return items


def newest_within(messages: list[ChatMessage], budget_chars: int) -> list[ChatMessage]:
    """The system prompt and the newest messages that fit `budget_chars` (always the last one): a long
    conversation goes on with its latest turns, and no reply's prompt grows without bound."""
    system = messages[:1] if messages and messages[0].role == "system" else []
    rest = messages[len(system) :]
    size = sum(_chars(message) for message in messages)
    dropped = 0
    while size > budget_chars and len(rest) - dropped > 1:
        size -= _chars(rest[dropped])
        dropped += 1
    return system + rest[dropped:]


def _chars(message: ChatMessage) -> int:
    return len(message.content) + sum(len(call.name) + len(call.arguments) for call in message.tool_calls)
