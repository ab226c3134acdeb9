"""What every remote backend (`llm_openai`, `stt_remote`, `tts_remote`) shares: its HTTP client, the meaning of
each failure, and its health for /healthz. Call `remote_client()` first, then `failure()` in each request's
`except httpx.HTTPError`, and keep a `RemoteHealth` for `check()`.

One rule for the three: a refused connection is `EngineUnavailable`, no answer within the backend's `timeout_s`
is `EngineTimeout`, any other transport failure an `EngineError`; each message names the endpoint, the setting
that bounds it and what to do. A request's outcome stands for the endpoint's health for `HEALTH_TTL_S`, after
which `check()` probes `GET {base_url}/models` (every OpenAI-compatible server answers it) at most once at a time.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from koe.engines.base import EngineError, EngineTimeout, EngineUnavailable
from koe.engines.pool import EngineBusy

MAX_ERROR_BODY = 4096
HEALTH_TTL_S = 10.0
"""How long a request's outcome (or a probe's) stands for the endpoint's health before /healthz probes again."""
PROBE_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 10.0


def remote_client(
    base_url: str,
    api_key: str | None,
    timeout_s: float,
    *,
    accept: str = "application/json",
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A client for one endpoint: an `*.azure.com` host is sent the key as `api-key`, any other as a Bearer."""
    headers = {"Accept": accept}
    if api_key:
        azure = httpx.URL(base_url).host.endswith(".azure.com")
        headers.update({"api-key": api_key} if azure else {"Authorization": f"Bearer {api_key}"})
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
    return httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport)


def failure(what: str, url: str, exc: httpx.HTTPError, timeout_setting: str, timeout_s: float) -> EngineError:
    """The engine error for a transport failure of a request to `url` (`what`: "LLM", "STT", "TTS")."""
    if isinstance(exc, httpx.ConnectError):
        return EngineUnavailable(f"cannot reach the {what} endpoint {url}: {exc}; is the server running?")
    if isinstance(exc, httpx.TimeoutException):
        return EngineTimeout(
            f"the {what} endpoint {url} did not answer within {timeout_s:g} s ({timeout_setting}): {exc!r}"
        )
    # the connection dropped mid-answer, or the response was not HTTP
    return EngineError(f"the connection to the {what} endpoint {url} failed mid-stream: {exc!r}")


def error_text(raw: bytes) -> str:
    """The message of an error body: OpenAI's `{"error": {"message"}}`, another JSON shape, or the text itself."""
    try:
        data = json.loads(raw)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict):
            return str(error.get("message") or error.get("detail") or error)
        return str(error)
    except ValueError:
        return raw.decode("utf-8", "replace").strip() or "(empty body)"


async def status_error(what: str, url: str, response: httpx.Response) -> EngineError:
    """The engine error for an error status, with the server's own message (the body is read, up to a bound): a
    server whose queue is full (429) is `EngineBusy`, one whose engine is missing (503) `EngineUnavailable`, one
    that timed out itself (504) `EngineTimeout`, as koe's own REST API answers them; anything else `EngineError`."""
    raw = (await response.aread())[:MAX_ERROR_BODY]
    message = f"{what} endpoint {url} answered {response.status_code}: {error_text(raw)}"
    kind = {429: EngineBusy, 503: EngineUnavailable, 504: EngineTimeout}.get(response.status_code, EngineError)
    return kind(message)


class RemoteHealth:
    """Whether one endpoint serves: the last outcome while recent, else a cached probe (see the module)."""

    def __init__(self, what: str, client: httpx.AsyncClient, base_url: str, params: dict[str, str] | None = None):
        self._what, self._client, self._params = what, client, params or {}
        self._url = f"{base_url.rstrip('/')}/models"
        self._outcome: tuple[float, str | None] | None = None
        """(monotonic time, problem or None) of the last request or probe."""
        self._probing = asyncio.Lock()

    def record(self, problem: str | None) -> None:
        self._outcome = (time.monotonic(), problem)

    async def check(self) -> str | None:
        if (known := self._recent()) is not None:
            return known[1]
        async with self._probing:
            if (known := self._recent()) is not None:  # another caller probed while this one waited
                return known[1]
            problem = await self._probe()
            self.record(problem)
            return problem

    def _recent(self) -> tuple[float, str | None] | None:
        outcome = self._outcome
        return outcome if outcome is not None and time.monotonic() - outcome[0] < HEALTH_TTL_S else None

    async def _probe(self) -> str | None:
        url, what = self._url, self._what
        try:
            response = await self._client.get(url, params=self._params, timeout=PROBE_TIMEOUT_S)
        except httpx.ConnectError as exc:
            return f"cannot reach the {what} endpoint {url}: {exc}; is the server running?"
        except httpx.TimeoutException:
            return f"the {what} endpoint {url} did not answer a probe within {PROBE_TIMEOUT_S:g} s: it is stalled"
        except httpx.HTTPError as exc:
            return f"the {what} endpoint {url} failed a probe: {exc!r}"
        if response.status_code >= 500:
            return f"the {what} endpoint {url} answered a probe with {response.status_code}"
        return None  # any other answer, even a 404, comes from a server that is up


class InFlight:
    """A remote backend's `Pool` view: at most `workers` requests in flight to the server, the rest waiting here.

    It bounds what one node asks of a model server, and it lets the best-effort work that reads a pool's load
    (partial transcripts skip while `active >= workers` or anything waits) see the remote's load as it sees a local
    pool's. Nothing is refused here: the server refuses (429) when its own queue is full.
    """

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        self.depth = 0
        self.active = 0
        self.completed = 0
        self._slots = asyncio.Semaphore(workers)

    async def __aenter__(self) -> None:
        self.depth += 1
        try:
            await self._slots.acquire()
        finally:
            self.depth -= 1
        self.active += 1

    async def __aexit__(self, *_exc: object) -> None:
        self.active -= 1
        self.completed += 1
        self._slots.release()

    def shutdown(self) -> None:
        """Nothing to stop: requests in flight end with their callers."""
