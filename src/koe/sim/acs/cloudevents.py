"""The JSON ACS sends outside the media stream, built exactly as documented (spec §5-§7): communication identifiers,
`CallConnectionProperties`, Event Grid deliveries (the subscription validation handshake and `IncomingCall`) and
the CloudEvents callbacks (`CallConnected`, `ParticipantsUpdated`, `MediaStreaming*`, `CallDisconnected`).

Pure functions of their arguments; `koe.sim.acs.callautomation` decides when to send which.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

EVENT_PREFIX = "Microsoft.Communication."
CALLBACK_VERSION = "2025-05-15"
TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/koe/providers/"
    "microsoft.communication/communicationservices/koe-emulator"
)

# resultInformation for the outcomes the emulator produces.
RESULT_OK = {"code": 200, "subCode": 0, "message": "Action completed successfully."}
RESULT_STREAM_FAILED = {
    "code": 400,
    "subCode": 8581,
    "message": "Action failed, Transport url is not valid or web socket server is not operational.",
}
RESULT_STREAM_LOST = {
    "code": 500,
    "subCode": 8603,
    "message": "Action failed, not able to establish websocket connection.",
}
RESULT_HANGUP = {"code": 200, "subCode": 7000, "message": "The conversation has ended."}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def identifier(raw_id: str) -> dict[str, Any]:
    """A `CommunicationIdentifierModel` for a raw ID (`4:+1555…` phone, `8:acs:…` user, `28:…` Teams app)."""
    if raw_id.startswith("4:"):
        return {"kind": "phoneNumber", "rawId": raw_id, "phoneNumber": {"value": raw_id[2:]}}
    if raw_id.startswith(("8:acs:", "8:spool:", "8:gcch-acs:", "8:dod-acs:")):
        return {"kind": "communicationUser", "rawId": raw_id, "communicationUser": {"id": raw_id}}
    if raw_id.startswith("8:orgid:"):
        return {
            "kind": "microsoftTeamsUser",
            "rawId": raw_id,
            "microsoftTeamsUser": {"userId": raw_id[8:], "isAnonymous": False, "cloud": "public"},
        }
    if raw_id.startswith("28:"):
        return {"kind": "microsoftTeamsApp", "rawId": raw_id, "microsoftTeamsApp": {"appId": raw_id.split(":")[-1]}}
    return {"kind": "unknown", "rawId": raw_id}


def raw_id_of(model: Any) -> str | None:
    """The raw ID of an identifier model as SDKs send it (`rawId`, or the kind's own id field)."""
    if not isinstance(model, dict):
        return None
    raw = model.get("rawId")
    if isinstance(raw, str) and raw:
        return raw
    phone = model.get("phoneNumber")
    if isinstance(phone, dict) and isinstance(phone.get("value"), str):
        return "4:" + str(phone["value"])
    user = model.get("communicationUser")
    if isinstance(user, dict) and isinstance(user.get("id"), str):
        return str(user["id"])
    return None


def subscription_validation(validation_url: str) -> tuple[str, list[dict[str, Any]]]:
    """(validation code, the Event Grid delivery that asks the webhook to echo it)."""
    code = str(uuid.uuid4())
    event = {
        "id": str(uuid.uuid4()),
        "topic": TOPIC,
        "subject": "",
        "data": {"validationCode": code, "validationUrl": validation_url},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": now_iso(),
        "metadataVersion": "1",
        "dataVersion": "1",
    }
    return code, [event]


def incoming_call(
    caller: str, callee: str, server_call_id: str, context: str, correlation_id: str, display_name: str = ""
) -> list[dict[str, Any]]:
    return [
        {
            "id": str(uuid.uuid4()),
            "topic": TOPIC,
            "subject": f"/caller/{caller}/recipient/{callee}",
            "data": {
                "to": identifier(callee),
                "from": identifier(caller),
                "serverCallId": server_call_id,
                "callerDisplayName": display_name,
                "incomingCallContext": context,
                "correlationId": correlation_id,
            },
            "eventType": EVENT_PREFIX + "IncomingCall",
            "dataVersion": "1.0",
            "metadataVersion": "1",
            "eventTime": now_iso(),
        }
    ]


def cloud_event(
    kind: str,
    call_connection_id: str,
    server_call_id: str,
    correlation_id: str,
    operation_context: str | None,
    result: dict[str, Any] | None = None,
    **data: Any,
) -> dict[str, Any]:
    """One callback event (`kind` without the `Microsoft.Communication.` prefix)."""
    source = f"calling/callConnections/{call_connection_id}"
    body: dict[str, Any] = {"eventSource": source}
    if operation_context is not None:
        body["operationContext"] = operation_context
    body["resultInformation"] = result or RESULT_OK
    body.update(data)
    body |= {
        "version": CALLBACK_VERSION,
        "callConnectionId": call_connection_id,
        "serverCallId": server_call_id,
        "correlationId": correlation_id,
        "publicEventType": EVENT_PREFIX + kind,
    }
    return {
        "id": str(uuid.uuid4()),
        "source": source,
        "type": EVENT_PREFIX + kind,
        "data": body,
        "time": now_iso(),
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "subject": source,
    }


def media_streaming_update(status: str, details: str) -> dict[str, Any]:
    """`mediaStreamingUpdate`; real payloads capitalise `contentType` (`Audio`) although the enum is `audio`."""
    return {"contentType": "Audio", "mediaStreamingStatus": status, "mediaStreamingStatusDetails": details}
