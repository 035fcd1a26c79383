"""A real headless browser for tests: Debian's ``chromium``, driven over the DevTools
protocol (a few commands over a WebSocket, with the ``websockets`` package).

``open_page(url)`` loads a page, lets its scripts run and returns the page's visible text
with every console error and uncaught exception it produced: what a person would have seen
in the browser and in its console. Tests skip when no ``chromium`` is installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.sync.client import connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


@dataclass
class Page:
    text: str
    #: console errors, uncaught exceptions and failed loads, one line each
    errors: list[str] = field(default_factory=list)


class _Session:
    """One page's DevTools session (flattened into the browser's WebSocket)."""

    def __init__(self, ws: Any, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.ids = iter(range(1, 1_000_000))
        self.errors: list[str] = []

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self.ids)
        self.ws.send(
            json.dumps(
                {"id": message_id, "method": method, "params": params, "sessionId": self.session_id}
            )
        )
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def pump(self, seconds: float) -> None:
        """Take the events of ``seconds`` (console messages, exceptions)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = params.get("args", [])
            self.errors.append(
                "console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in args)
            )
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            self.errors.append(
                "exception: " + str(exception.get("description") or details.get("text"))
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())


def open_page(
    url: str,
    *,
    settle_s: float = 4.0,
    until: Callable[[str], bool] | None = None,
    timeout_s: float = 30.0,
) -> Page:
    """Load ``url`` in headless Chromium; wait ``settle_s`` (or, with ``until``, until the
    page's text satisfies it, at most ``timeout_s``) and return its text and errors."""
    assert CHROMIUM is not None, "no chromium installed"
    # Chromium's helper processes may still write to the profile while they go
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",  # tests run as root in a container
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its group: the browser and the helpers it starts
        )
        try:
            assert process.stderr is not None
            browser_url = None
            deadline = time.monotonic() + timeout_s
            while browser_url is None and time.monotonic() < deadline:
                line = process.stderr.readline()
                if not line and process.poll() is not None:
                    break
                if match := _LISTENING.search(line):
                    browser_url = match.group(1)
            assert browser_url, "chromium did not start its DevTools endpoint"
            with connect(browser_url, max_size=None, open_timeout=timeout_s) as ws:
                return _load(ws, url, settle_s, until, timeout_s)
        finally:
            os.killpg(process.pid, signal.SIGKILL)  # the group this call started
            process.wait(10)


def _load(
    ws: Any, url: str, settle_s: float, until: Callable[[str], bool] | None, timeout_s: float
) -> Page:
    ws.send(
        json.dumps({"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}})
    )
    target = _reply(ws, 1)["targetId"]
    ws.send(
        json.dumps(
            {
                "id": 2,
                "method": "Target.attachToTarget",
                "params": {"targetId": target, "flatten": True},
            }
        )
    )
    page = _Session(ws, _reply(ws, 2)["sessionId"])
    page.send("Runtime.enable")
    page.send("Log.enable")
    page.send("Page.enable")
    page.send("Page.navigate", url=url)
    deadline = time.monotonic() + (timeout_s if until is not None else settle_s)
    text = ""
    while True:
        page.pump(0.5)
        text = (
            page.send("Runtime.evaluate", expression="document.body.innerText")
            .get("result", {})
            .get("value")
            or ""
        )
        if until is not None and until(text):
            page.pump(0.5)  # what the last render may have logged
            break
        if time.monotonic() >= deadline:
            break
    return Page(text, page.errors)


def _reply(ws: Any, message_id: int) -> dict[str, Any]:
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message.get("id") == message_id:
            return message["result"]
