"""A real headless Chromium for the tests, driven over the DevTools protocol (CDP).

``Browser`` starts Debian's ``chromium`` on a private profile with a DevTools port on
127.0.0.1; ``browser.open(url)`` gives a :class:`Tab` that loaded the page, collected its
console errors, uncaught exceptions and network requests, and can evaluate JavaScript::

    with Browser(tmp_path) as browser:
        tab = browser.open(html_path.as_uri())
        assert tab.errors() == []
        assert tab.evaluate("document.querySelectorAll('svg').length") == 3

The protocol runs over the ``websockets`` package's synchronous client: no other
dependency, and nothing of the browser's is installed by the tests (``chromium`` from the
distribution: ``apt-get install chromium``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)


class BrowserError(RuntimeError):
    """The browser did not start, or a DevTools command failed."""


class Tab:
    """One page target: commands and the events that arrived while waiting for them."""

    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        self._stack = contextlib.ExitStack()
        self._ws: ClientConnection = self._stack.enter_context(
            connect(url, max_size=None, open_timeout=timeout)
        )
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A DevTools command's result; the events received meanwhile are kept."""
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while True:
            message = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        """The first event ``method`` (already received or still to come)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for event in self.events:
                if event.get("method") == method:
                    return event
            self.events.append(
                json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            )

    def evaluate(self, expression: str) -> Any:
        """``expression``'s value (JSON-able), evaluated in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, failed assertions, uncaught exceptions and error log entries."""
        self.send("Runtime.evaluate", expression="0")  # let pending events arrive first
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                thrown = details.get("exception", {}).get("description", "")
                found.append(f"{details.get('text')} {thrown}".strip())
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "assert",
            ):
                found.append(" ".join(str(arg.get("value")) for arg in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(str(params["entry"].get("text")))
        return found

    def requests(self) -> list[str]:
        """The URLs the page asked for (the page itself included)."""
        return [
            event["params"]["request"]["url"]
            for event in self.events
            if event.get("method") == "Network.requestWillBeSent"
        ]

    def close(self) -> None:
        self._stack.close()


class Browser:
    """A headless Chromium of the test's own (a profile under ``directory``)."""

    def __init__(self, directory: Path, timeout: float = 30.0) -> None:
        if CHROMIUM is None:
            raise BrowserError("no chromium on PATH (apt-get install chromium)")
        self.timeout = timeout
        self.profile = directory / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",  # tests run as root in containers
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",  # Chromium picks one: DevToolsActivePort
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helpers (zygote, renderers) in a group of its own
        )
        self.tabs: list[Tab] = []
        try:
            self.port = self._port()
        except BaseException:
            self.close()
            raise

    def _port(self) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with {self.process.returncode}")
            lines = active.read_text().split() if active.exists() else []
            if lines:
                return int(lines[0])
            time.sleep(0.05)
        raise BrowserError("chromium did not open its DevTools port")

    def open(self, url: str) -> Tab:
        """A new tab that loaded ``url``, with console, log and network events on."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            target = json.load(response)
        tab = Tab(target["webSocketDebuggerUrl"], self.timeout)
        self.tabs.append(tab)
        for domain in ("Runtime", "Log", "Network", "Page"):
            tab.send(f"{domain}.enable")
        tab.send("Page.navigate", url=url)
        tab.wait_for("Page.loadEventFired")
        return tab

    def close(self) -> None:
        for tab in self.tabs:
            tab.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(10)
                break
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
