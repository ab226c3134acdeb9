"""Headless Firefox for the browser tests: Debian's `/usr/bin/firefox-esr` driven over WebDriver BiDi, which Firefox
speaks itself (no geckodriver, no browser that a tool downloads), with a fresh profile per test, a fake microphone, a
private PulseAudio with a null sink as its speakers, and every process it started gone afterwards.

    async with firefox(tmp_path) as browser:
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.click("#start")
        state = await page.call("() => document.title")

Firefox's fake microphone plays a tone; with `allow_microphone=False` the microphone is refused, as a person
refusing it would. Firefox runs Web Audio only while an output device plays: a machine without one (no sound server,
no /dev/snd) leaves every AudioContext suspended, so each browser gets its own PulseAudio; `audio_output=False` gives
it none, as on such a machine. `page.errors` holds what the page logged at level error, uncaught exceptions included.
The messages themselves are tests/browser/bidi.py; this module is the process, the socket and the page.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.browser.bidi import (
    BidiError,
    CommandFailure,
    Commands,
    CommandSuccess,
    LogEntry,
    local_value,
    log_entry,
    parse_message,
    script_result,
)
from tests.conftest import REPO

T = TypeVar("T")
FIREFOX = Path("/usr/bin/firefox-esr")
PULSEAUDIO = Path("/usr/bin/pulseaudio")
ARTIFACTS = REPO / "test-artifacts"
STARTUP_TIMEOUT_S = 60.0  # a cold start on a loaded 2-core machine
COMMAND_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 10.0
VIEWPORT = {"width": 1400, "height": 900}
MAX_MESSAGE_BYTES = 64 << 20  # screenshots come back as one base64 message

# Firefox reaches for the network from the first second (updates, telemetry, remote settings, captive portal check);
# on a closed network that is noise and delay. The remote agent's own recommended prefs already cover much of it.
PREFS: dict[str, bool | int | str] = {
    "remote.active-protocols": 1,  # WebDriver BiDi only (2 would be the retired CDP)
    "media.navigator.streams.fake": True,
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.search.update": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "extensions.update.enabled": False,
    "messaging-system.rsexperimentloader.enabled": False,
}
ALLOW_MICROPHONE = {"media.navigator.permission.disabled": True}
DENY_MICROPHONE = {"permissions.default.microphone": 2}  # 2: block, without asking
NO_AUDIO_OUTPUT = {"media.cubeb.force_null_context": True}  # no audio backend at all, whatever the machine has


@contextlib.asynccontextmanager
async def firefox(
    tmp_path: Path, *, allow_microphone: bool = True, audio_output: bool = True
) -> AsyncIterator[Firefox]:
    for program, package in ((FIREFOX, "firefox-esr"), (PULSEAUDIO, "pulseaudio")):
        if not program.exists():
            pytest.fail(
                f"the Firefox tests need Debian's {package}: run `scripts/ensure-apt {package}` (make test does)"
            )
    profile = tmp_path / "firefox-profile"
    profile.mkdir()
    prefs = {**PREFS, **(ALLOW_MICROPHONE if allow_microphone else DENY_MICROPHONE)}
    if not audio_output:
        prefs.update(NO_AUDIO_OUTPUT)
    (profile / "user.js").write_text(
        "".join(f"user_pref({json.dumps(k)}, {json.dumps(v)});\n" for k, v in prefs.items())
    )
    async with _pulseaudio(tmp_path / "pulse") as pulse_server:
        env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "PULSE_SERVER": pulse_server}
        command = [str(FIREFOX), "--headless", "--no-remote", "--profile", str(profile)]
        command += ["--remote-debugging-port", "0"]  # a free port, which Firefox writes to WebDriverBiDiServer.json
        async with _process(command, tmp_path / "firefox.log", env) as process:
            port = await _started("WebDriver BiDi", process, tmp_path / "firefox.log", lambda: _bidi_port(profile))
            url = f"ws://127.0.0.1:{port}/session"
            async with connect(url, max_size=MAX_MESSAGE_BYTES, open_timeout=COMMAND_TIMEOUT_S) as socket:
                browser = Firefox(socket)
                await browser.start()
                try:
                    yield browser
                finally:
                    await browser.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), EXIT_TIMEOUT_S)


@contextlib.asynccontextmanager
async def _pulseaudio(home: Path) -> AsyncIterator[str]:
    """A PulseAudio of this test's own, with a null sink (it plays in real time, to nowhere); yields its address."""
    (home / "run").mkdir(parents=True, mode=0o700)
    socket = home / "native"
    command = [str(PULSEAUDIO), "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no"]
    command += ["-L", f"module-native-protocol-unix socket={socket} auth-anonymous=1", "-L", "module-null-sink"]
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(home / "run")}
    async with _process(command, home / "pulseaudio.log", env) as process:
        await _started("pulseaudio", process, home / "pulseaudio.log", lambda: socket.exists() or None)
        yield f"unix:{socket}"


@contextlib.asynccontextmanager
async def _process(command: list[str], log: Path, env: dict[str, str]) -> AsyncIterator[asyncio.subprocess.Process]:
    """`command` in a process group of its own, its output in `log`; the whole group is killed at the end."""
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output, env=env, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


async def _started(what: str, process: asyncio.subprocess.Process, log: Path, ready: Callable[[], T | None]) -> T:
    """Poll `ready()` until it gives a value; fail with the end of the log if the process exits or takes too long."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT_S
    while (value := ready()) is None:
        if process.returncode is not None or loop.time() > deadline:
            raise RuntimeError(f"{what} did not start (exit {process.returncode}): {_tail(log)}")
        await asyncio.sleep(0.05)
    return value


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def _bidi_port(profile: Path) -> int | None:
    try:
        port: int = json.loads((profile / "WebDriverBiDiServer.json").read_text())["ws_port"]
    except (OSError, ValueError, KeyError):
        return None  # not written yet, or half written
    return port


class Firefox:
    """One BiDi session: commands out, their answers and the log events in, on a reader task."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._commands = Commands()
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.log: list[LogEntry] = []

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read())
        await self.send("session.new", {"capabilities": {}})
        await self.send("session.subscribe", {"events": ["log.entryAdded"]})

    async def send(self, method: str, params: dict[str, Any], timeout_s: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        number, text = self._commands.encode(method, params)
        answer = self._waiting[number] = asyncio.get_running_loop().create_future()
        try:
            await self._socket.send(text)
            return await asyncio.wait_for(answer, timeout_s)
        finally:
            self._waiting.pop(number, None)

    async def _read(self) -> None:
        try:
            async for text in self._socket:
                message = parse_message(text)
                if isinstance(message, CommandSuccess | CommandFailure):
                    answer = self._waiting.get(message.id) if message.id is not None else None
                    if answer is None or answer.done():
                        continue
                    if isinstance(message, CommandSuccess):
                        answer.set_result(message.result)
                    else:
                        answer.set_exception(BidiError(message.error, message.message))
                elif message.method == "log.entryAdded":
                    self.log.append(log_entry(message.params))
        finally:
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(ConnectionError("Firefox closed the WebDriver BiDi connection"))

    async def new_page(self) -> Page:
        created = await self.send("browsingContext.create", {"type": "tab"})
        page = Page(self, created["context"])
        await self.send("browsingContext.setViewport", {"context": page.context, "viewport": VIEWPORT})
        return page

    async def close(self) -> None:
        # browser.close ends the session and the browser; the answer may not arrive before the socket closes.
        with contextlib.suppress(BidiError, ConnectionError, TimeoutError, OSError):
            await self.send("browser.close", {}, timeout_s=EXIT_TIMEOUT_S)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


class Page:
    """One tab (a top-level browsing context)."""

    def __init__(self, browser: Firefox, context: str) -> None:
        self.browser = browser
        self.context = context

    @property
    def errors(self) -> list[LogEntry]:
        return [e for e in self.browser.log if e.level == "error" and e.context in (self.context, None)]

    async def goto(self, url: str) -> None:
        await self.browser.send("browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"})

    async def add_init_script(self, function: str) -> None:
        """Run `function` in every document this tab loads from now on, before the page's own scripts."""
        await self.browser.send(
            "script.addPreloadScript", {"functionDeclaration": function, "contexts": [self.context]}
        )

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        params = {"expression": expression, "target": {"context": self.context}, "awaitPromise": True}
        return script_result(await self.browser.send("script.evaluate", params))

    async def call(self, function: str, *args: Any) -> Any:
        """`function(...args)` in the page, its promise awaited; arguments and result are plain JSON-like values."""
        params = {
            "functionDeclaration": function,
            "arguments": [local_value(a) for a in args],
            "target": {"context": self.context},
            "awaitPromise": True,
        }
        return script_result(await self.browser.send("script.callFunction", params))

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (it counts as the user's activation of the page)."""
        params = {
            "functionDeclaration": "(s) => { const e = document.querySelector(s); e?.scrollIntoView(); return e; }",
            "arguments": [local_value(selector)],
            "target": {"context": self.context},
            "awaitPromise": False,
        }
        element = script_result(await self.browser.send("script.callFunction", params))
        if not isinstance(element, dict) or "sharedId" not in element:
            raise AssertionError(f"no element matches {selector!r}")
        origin = {"type": "element", "element": {"sharedId": element["sharedId"]}}
        mouse = [
            {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        ]
        actions = [{"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}, "actions": mouse}]
        await self.browser.send("input.performActions", {"context": self.context, "actions": actions})

    async def until(self, function: str, what: str, timeout_s: float, *args: Any) -> Any:
        """Poll `function(...args)` in the page until it returns something truthy; return that."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            value = await self.call(function, *args)
            if value:
                return value
            if loop.time() > deadline:
                raise AssertionError(f"{what} did not happen within {timeout_s} s (last: {value!r}; {self.errors})")
            await asyncio.sleep(0.2)


async def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot under test-artifacts/ (git-ignored) and return its path."""
    shot = await page.browser.send("browsingContext.captureScreenshot", {"context": page.context, "origin": "document"})
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
