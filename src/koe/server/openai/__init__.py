"""The OpenAI-compatible REST API on koe's engines: `api.openai_routes()` mounts `audio` (transcriptions, speech),
`chat` (chat completions) and the model list; `_common` is the error body, engine failures as statuses, and the
JSON body rules every route shares."""
