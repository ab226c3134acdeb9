"""Spec §4.1, §2.2, §6 and §11.8-9: parsing client events in each dialect, and the errors bad input becomes.

Inputs are the shapes the SDKs send: every OpenAI example is first validated against the openai 3.54.0 client-event
union of its dialect, the Azure ones are serialized by azure-ai-voicelive 1.3.1 models, and the openai-agents ones
come from its own converters.
"""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any

import pytest
from azure.ai.voicelive.models import (
    ClientEventConversationItemCreate,
    ClientEventInputAudioTurnAppend,
    ClientEventInputTextDelta,
    ClientEventResponseCreate,
    ClientEventSessionAvatarConnect,
    InputTextContentPart,
    ResponseCreateParams,
    UserMessageItem,
)
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.realtime import RealtimeClientEvent as GaClientEvent
from pydantic import Field, TypeAdapter

from koe.protocols.realtime import (
    ROOT,
    ContentPart,
    ConversationItemCreate,
    ConversationItemDelete,
    ConversationItemRetrieve,
    ConversationItemTruncate,
    Dialect,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputAudioBufferAppend,
    InputAudioBufferClear,
    InputAudioBufferCommit,
    InputAudioClear,
    InputAudioTurnAppend,
    InputAudioTurnCancel,
    InputAudioTurnEnd,
    InputAudioTurnStart,
    InputTextDelta,
    InputTextDone,
    ItemReference,
    McpApprovalResponse,
    MessageItem,
    OutputAudioBufferClear,
    RealtimeError,
    ResponseCancel,
    ResponseCreate,
    ServerEvents,
    SessionAvatarConnect,
    SessionConfig,
    Voice,
    parse_client_event,
)
from koe.protocols.realtime.formats import G711_ULAW, PCM16_16K
from koe.protocols.realtime.session import FunctionTool

from .conftest import ALL_DIALECTS, check_event

GA_CLIENT: TypeAdapter[Any] = TypeAdapter(Annotated[GaClientEvent, Field(discriminator="type")])
BETA_CLIENT: TypeAdapter[Any] = TypeAdapter(Annotated[BetaClientEvent, Field(discriminator="type")])
PCM = b"\x01\x00\xff\x7f" * 240


def sdk_text(event: dict[str, Any], dialect: Dialect) -> str:
    """`event` as JSON, after checking it is a valid client event for the openai types of `dialect`."""
    if dialect is Dialect.GA:
        GA_CLIENT.validate_python(event)
    elif dialect is Dialect.BETA:
        BETA_CLIENT.validate_python(event)
    return json.dumps(event)


def parse(event: dict[str, Any] | str, dialect: Dialect, **kwargs: Any) -> Any:
    text = event if isinstance(event, str) else sdk_text(event, dialect)
    return parse_client_event(text, dialect, **kwargs)


def error_for(text: str, dialect: Dialect = Dialect.GA, **kwargs: Any) -> RealtimeError:
    with pytest.raises(RealtimeError) as info:
        parse_client_event(text, dialect, **kwargs)
    for event in ServerEvents(dialect).error(info.value):
        check_event(event, dialect)
    return info.value


@ALL_DIALECTS
def test_common_events(dialect: Dialect) -> None:
    b64 = base64.b64encode(PCM).decode()
    assert parse({"type": "input_audio_buffer.append", "audio": b64}, dialect) == InputAudioBufferAppend(audio=PCM)
    assert parse({"type": "input_audio_buffer.commit"}, dialect) == InputAudioBufferCommit()
    assert parse({"type": "input_audio_buffer.clear"}, dialect) == InputAudioBufferClear()
    assert parse({"type": "output_audio_buffer.clear"}, dialect) == OutputAudioBufferClear()
    assert parse({"type": "conversation.item.retrieve", "item_id": "item_1"}, dialect) == ConversationItemRetrieve(
        item_id="item_1"
    )
    assert parse({"type": "conversation.item.delete", "item_id": "item_7"}, dialect) == ConversationItemDelete(
        item_id="item_7"
    )
    truncate = {"type": "conversation.item.truncate", "item_id": "item_7", "content_index": 0, "audio_end_ms": 1500}
    assert parse(truncate, dialect) == ConversationItemTruncate(item_id="item_7", content_index=0, audio_end_ms=1500)
    assert parse({"type": "response.cancel"}, dialect) == ResponseCancel()
    assert parse({"type": "response.cancel", "response_id": "resp_1"}, dialect) == ResponseCancel(response_id="resp_1")
    created = parse({"type": "response.create"}, dialect)
    assert isinstance(created, ResponseCreate)
    assert created.response.cancel_previous is (dialect is Dialect.AZURE)  # Voice Live defaults to true (§5G)


@pytest.mark.parametrize(("raw", "expected"), [("", None), (None, None), ("evt_1", "evt_1")])
def test_event_id_absent_empty_or_null(raw: str | None, expected: str | None) -> None:
    assert parse_client_event('{"type":"input_audio_buffer.commit"}', Dialect.AZURE).event_id is None
    text = json.dumps({"type": "input_audio_buffer.commit", "event_id": raw})
    assert parse_client_event(text, Dialect.AZURE).event_id == expected


def test_append_checks_whole_samples_of_the_input_format() -> None:
    odd = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02\x03").decode()})
    err = error_for(odd)
    assert (err.code, err.param) == ("invalid_value", "audio")
    event = parse_client_event(odd, Dialect.GA, input_format=G711_ULAW)
    assert event == InputAudioBufferAppend(audio=b"\x01\x02\x03")
    even = json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(PCM).decode()})
    assert parse_client_event(even, Dialect.AZURE, input_format=PCM16_16K) == InputAudioBufferAppend(audio=PCM)


@pytest.mark.parametrize(
    ("text", "code", "param"),
    [
        ("{not json", "invalid_json", None),
        ("", "invalid_json", None),
        ("[1, 2]", "invalid_json", None),
        ('"session.update"', "invalid_json", None),
        ("{}", "missing_required_parameter", "type"),
        ('{"type": 5}', "invalid_value", "type"),
        ('{"type": "session.delete"}', "invalid_value", "type"),
        ('{"type": "input_audio_buffer.append"}', "missing_required_parameter", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value", "audio"),
        ('{"type": "input_audio_buffer.append", "audio": 12}', "invalid_value", "audio"),
        ('{"type": "conversation.item.retrieve"}', "missing_required_parameter", "item_id"),
        (
            '{"type": "conversation.item.truncate", "item_id": "i", "audio_end_ms": 5}',
            "missing_required_parameter",
            "content_index",
        ),
        (
            '{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": -1}',
            "invalid_value",
            "audio_end_ms",
        ),
        ('{"type": "session.update"}', "missing_required_parameter", "session"),
        ('{"type": "session.update", "session": []}', "invalid_value", "session"),
        (
            '{"type": "conversation.item.create", "item": {"type": "message", "role": "robot", "content": []}}',
            "invalid_value",
            "item.role",
        ),
        (
            '{"type": "conversation.item.create", "item": {"type": "message", "role": "user",'
            ' "content": [{"type": "text", "text": "x"}]}}',
            "invalid_value",
            "item.content[0].type",
        ),
        (
            '{"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c"}}',
            "missing_required_parameter",
            "item.output",
        ),
        ('{"type": "response.create", "response": {"conversation": 3}}', "invalid_value", "response.conversation"),
        ('{"type": "response.create", "response": {"metadata": {"k": 1}}}', "invalid_value", "response.metadata.k"),
        ('{"type": "input_audio_buffer.commit", "event_id": 7}', "invalid_value", "event_id"),
    ],
)
def test_bad_input_becomes_a_typed_error(text: str, code: str, param: str | None) -> None:
    err = error_for(text)
    assert (err.type, err.code, err.param) == ("invalid_request_error", code, param)
    assert err.message


def test_errors_carry_the_client_event_id() -> None:
    err = error_for('{"type": "conversation.item.delete", "event_id": "evt_c7"}')
    assert err.event_id == "evt_c7"
    (event,) = ServerEvents(Dialect.GA).error(err)
    assert event["error"]["event_id"] == "evt_c7"


def test_huge_frames_are_refused_before_parsing() -> None:
    audio = "A" * (16 * 1024 * 1024)
    err = error_for(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))
    assert err.code == "invalid_json"
    err = error_for(json.dumps({"type": "input_audio_buffer.append", "audio": "A" * (15 * 1024 * 1024 + 4)}))
    assert (err.code, err.param) == ("invalid_value", "audio")


AZURE_ONLY = [
    ClientEventInputAudioTurnAppend(turn_id="t1", audio=base64.b64encode(PCM).decode()).as_dict(),
    ClientEventInputTextDelta(id="item_3", delta="Hel").as_dict(),
    ClientEventSessionAvatarConnect(client_sdp="v=0").as_dict(),
    {"type": "input_audio.turn.start", "turn_id": "t1"},
    {"type": "input_audio.turn.end", "turn_id": "t1"},
    {"type": "input_audio.turn.cancel", "turn_id": "t1"},
    {"type": "input_audio.clear"},
    {"type": "input_text.done", "id": "item_3", "content_index": 0},
    {"type": "mcp_approval_response", "approval_request_id": "apr_1", "approve": True, "reason": "ok"},
]


def test_azure_only_events() -> None:
    parsed = [parse_client_event(json.dumps(event), Dialect.AZURE) for event in AZURE_ONLY]
    assert parsed == [
        InputAudioTurnAppend(turn_id="t1", audio=PCM),
        InputTextDelta(id="item_3", delta="Hel"),
        SessionAvatarConnect(client_sdp="v=0"),
        InputAudioTurnStart(turn_id="t1"),
        InputAudioTurnEnd(turn_id="t1"),
        InputAudioTurnCancel(turn_id="t1"),
        InputAudioClear(),
        InputTextDone(id="item_3", content_index=0),
        McpApprovalResponse(approval_request_id="apr_1", approve=True, reason="ok"),
    ]


@pytest.mark.parametrize("dialect", [Dialect.BETA, Dialect.GA])
@pytest.mark.parametrize("event", AZURE_ONLY, ids=[e["type"] for e in AZURE_ONLY])
def test_azure_only_events_are_unknown_elsewhere(dialect: Dialect, event: dict[str, Any]) -> None:
    err = error_for(json.dumps(event), dialect)
    assert (err.code, err.param) == ("invalid_value", "type")


def test_transcription_session_update_is_beta_and_azure_only() -> None:
    err = error_for('{"type": "transcription_session.update", "session": {}}', Dialect.GA)
    assert err.param == "type"


# -- conversation.item.create ----------------------------------------------------------------------------------------


def test_openai_agents_items() -> None:
    agents = pytest.importorskip("agents.realtime.openai_realtime")
    from agents.realtime.model_inputs import RealtimeModelSendToolOutput, RealtimeModelSendUserInput

    helper = agents._ConversionHelper
    user = helper.convert_user_input_to_item_create(RealtimeModelSendUserInput(user_input="Hello there"))
    event = parse_client_event(user.model_dump_json(exclude_unset=True), Dialect.GA)
    assert event == ConversationItemCreate(item=MessageItem("user", (ContentPart("input_text", text="Hello there"),)))

    class _Call:
        call_id = "call_9"

    tool_output = RealtimeModelSendToolOutput(tool_call=_Call(), output='{"ok":true}', start_response=True)  # type: ignore[arg-type]
    event = parse_client_event(helper.convert_tool_output(tool_output).model_dump_json(exclude_unset=True), Dialect.GA)
    assert event == ConversationItemCreate(item=FunctionCallOutputItem("call_9", '{"ok":true}'))

    truncate = helper.convert_interrupt("item_5", 0, 1234)
    assert parse_client_event(truncate.model_dump_json(exclude_unset=True), Dialect.GA) == ConversationItemTruncate(
        item_id="item_5", content_index=0, audio_end_ms=1234
    )


@ALL_DIALECTS
def test_item_kinds(dialect: Dialect) -> None:
    audio = base64.b64encode(PCM).decode()
    message = {
        "type": "conversation.item.create",
        "previous_item_id": "root",
        "item": {
            "id": "item_mine",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi"}, {"type": "input_audio", "audio": audio}],
        },
    }
    event = parse(message, dialect)
    assert event.previous_item_id == ROOT
    assert event.item == MessageItem(
        "user", (ContentPart("input_text", text="Hi"), ContentPart("input_audio", audio=PCM)), id="item_mine"
    )
    call = {
        "type": "conversation.item.create",
        "item": {"type": "function_call", "name": "get_weather", "call_id": "call_1", "arguments": "{}"},
    }
    assert parse(call, dialect).item == FunctionCallItem("get_weather", "{}", "call_1")
    text_part = "output_text" if dialect is Dialect.GA else "text"
    assistant = {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "assistant", "content": [{"type": text_part, "text": "Earlier reply"}]},
    }
    assert parse(assistant, dialect).item.content == (ContentPart("text", text="Earlier reply"),)
    system = {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "Be brief"}]},
    }
    assert parse(system, dialect).item.role == "system"


def test_item_audio_is_whole_samples_of_the_input_format() -> None:
    odd = base64.b64encode(b"\x01\x02\x03").decode()
    item = {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": odd}]}
    text = json.dumps({"type": "conversation.item.create", "item": item})
    assert error_for(text).param == "item.content[0].audio"
    event = parse_client_event(text, Dialect.GA, input_format=G711_ULAW)
    assert isinstance(event, ConversationItemCreate)
    assert event.item.content[0].audio == b"\x01\x02\x03"  # type: ignore[union-attr]


def test_images_are_not_beta() -> None:
    image = {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}],
        },
    }
    assert parse(image, Dialect.GA).item.content[0] == ContentPart(
        "input_image", image_url="data:image/png;base64,AAAA", detail="low"
    )
    assert error_for(json.dumps(image), Dialect.BETA).param == "item.content[0].type"


def test_voicelive_sdk_item_create() -> None:
    event = ClientEventConversationItemCreate(item=UserMessageItem(content=[InputTextContentPart(text="Hola")]))
    parsed = parse_client_event(json.dumps(event.as_dict()), Dialect.AZURE)
    assert parsed == ConversationItemCreate(item=MessageItem("user", (ContentPart("input_text", text="Hola"),)))


# -- response.create ---------------------------------------------------------------------------------------------


def test_beta_and_ga_overrides_normalize_to_one_type() -> None:
    beta = {
        "type": "response.create",
        "response": {
            "modalities": ["text"],
            "instructions": "Answer in French",
            "voice": "verse",
            "output_audio_format": "g711_ulaw",
            "temperature": 0.7,
            "max_response_output_tokens": 200,
            "conversation": "none",
            "metadata": {"topic": "fr"},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": "required",
            "input": [
                {"type": "item_reference", "id": "item_1"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Now"}]},
            ],
        },
    }
    ga = {
        "type": "response.create",
        "response": {
            "output_modalities": ["text"],
            "instructions": "Answer in French",
            "max_output_tokens": 200,
            "audio": {"output": {"voice": "verse", "format": {"type": "audio/pcmu"}}},
            "conversation": "none",
            "metadata": {"topic": "fr"},
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": "required",
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Now"}]}],
        },
    }
    b, g = parse(beta, Dialect.BETA).response, parse(ga, Dialect.GA).response
    for overrides in (b, g):
        assert overrides.modalities == ("text",)
        assert overrides.voice == Voice("verse")
        assert overrides.output_audio_format == G711_ULAW
        assert overrides.max_output_tokens == 200
        assert overrides.conversation == "none"
        assert overrides.metadata == {"topic": "fr"}
        assert overrides.tools == (FunctionTool("f", "", {"type": "object"}),)
        assert overrides.tool_choice == "required"
        assert overrides.cancel_previous is False
    assert b.input is not None
    assert b.input[0] == ItemReference("item_1")
    assert b.temperature == 0.7
    settings = b.settings(SessionConfig(instructions="Be nice", temperature=0.8))
    assert (settings.instructions, settings.temperature, settings.modalities) == ("Answer in French", 0.7, ("text",))


def test_voicelive_response_create_extras() -> None:
    event = ClientEventResponseCreate(
        additional_instructions="Mention the weather.",
        response=ResponseCreateParams(
            commit=True,
            cancel_previous=False,
            max_output_tokens=50,
            modalities=["text", "audio"],
            voice={"type": "azure-standard", "name": "en-US-AvaNeural"},
        ),
    )
    parsed = parse_client_event(json.dumps(event.as_dict()), Dialect.AZURE)
    assert isinstance(parsed, ResponseCreate)
    overrides = parsed.response
    assert (overrides.commit, overrides.cancel_previous, overrides.max_output_tokens) == (True, False, 50)
    assert overrides.voice == Voice("en-US-AvaNeural", "azure-standard")
    assert overrides.settings(SessionConfig(instructions="Be nice")).instructions == "Be nice\n\nMention the weather."
    extras = {
        "type": "response.create",
        "response": {
            "pre_generated_assistant_message": {"type": "message", "role": "assistant", "content": []},
            "append_input_items": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x"}]}
            ],
            "reasoning_effort": "low",
        },
    }
    parsed = parse_client_event(json.dumps(extras), Dialect.AZURE)
    assert isinstance(parsed, ResponseCreate)
    assert [w.param for w in parsed.warnings] == ["response.pre_generated_assistant_message"]
    assert parsed.response.append_input_items is not None
    assert set(parsed.response.extras) == {"pre_generated_assistant_message", "reasoning_effort"}
