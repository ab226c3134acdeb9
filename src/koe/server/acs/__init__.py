"""The ACS door: Azure Communication Services media streaming and Call Automation.

Read `door` first (`AcsDoor`: admission, the per-connection receive loop, the mode's `Pipeline`), then `writer`
(every outbound frame) and `modes/` (what a call's audio becomes: `echo`, `engine` for transcribe and agent,
`bridge`). `socket` is the small contract both listeners drive the door through: the main port's Starlette
WebSocket, and `listener` (picows, on `acs.media_port`). `jwt` validates ACS's bearer token; `callautomation`
answers calls and starts or stops media through the official SDK.
"""
