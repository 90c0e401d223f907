"""A bare Chrome DevTools Protocol driver for memory soaks: Debian's chromium started here, one
tab, a handful of commands over the browser's websocket.

Why not Playwright for the soak: Playwright enables the DevTools Network domain on every page it
drives (it needs it for its request events and `response.body()`), and an enabled Network agent
keeps the bodies of the page's responses in the renderer for the inspector, up to ~200 MB per
agent (measured with memory-infra dumps: the renderer's `partition_alloc/partitions/buffer`
grew to 320 MB with Playwright's and the bench's own agent, 170 MB with Playwright's alone, and
a forced GC freed none of it). A person's browser has no inspector attached; this driver enables
only what the soak reads (Performance metrics, Runtime evaluation, input).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from websockets.sync.client import connect


class CdpError(RuntimeError):
    pass


class BareChromium:
    """`with BareChromium(path, args) as browser: tab = browser.new_tab(width, height)`."""

    def __init__(self, executable: str, args: list[str]):
        self.profile = Path(tempfile.mkdtemp(prefix="clipfeed-cdp-"))
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             *args, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.socket = connect(self._endpoint(), max_size=None, open_timeout=30)
        self._ids = itertools.count(1)
        self._events: list[dict] = []

    def _endpoint(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            match = re.search(r"DevTools listening on (ws://\S+)", line)
            if match:
                return match.group(1)
            if not line and self.process.poll() is not None:
                break
        raise CdpError("chromium did not report a DevTools endpoint")

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60.0):
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") != message_id:
                continue  # an event (none are enabled that matter here) or a late reply
            if "error" in reply:
                raise CdpError(f"{method}: {reply['error'].get('message')}")
            return reply.get("result", {})

    def new_tab(self, width: int, height: int) -> Tab:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        tab = Tab(self, session)
        tab.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                        "mobile": True})
        tab.send("Emulation.setTouchEmulationEnabled", {"enabled": True})
        tab.send("Performance.enable")
        return tab

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - it is going away either way
            pass
        try:
            self.socket.close()
        finally:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> BareChromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Tab:
    def __init__(self, browser: BareChromium, session: str):
        self.browser = browser
        self.session = session

    def send(self, method: str, params: dict | None = None, timeout: float = 60.0):
        return self.browser.send(method, params, session=self.session, timeout=timeout)

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and return once the new document has loaded."""
        self.send("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.evaluate("document.readyState === 'complete' && location.href") == url:
                    return
            except CdpError:
                pass  # the old document's context went away mid-evaluation
            time.sleep(0.05)  # polling the navigation: a benchmark driver, not a test
        raise CdpError(f"{url} did not load")

    def evaluate(self, expression: str, timeout: float = 60.0):
        """The value of `expression` (a promise is awaited), JSON-serialisable."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CdpError((details.get("exception") or {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def wait_for(self, predicate: str, timeout: float = 30.0):
        """Resolve when `predicate` (a JS function source) returns something truthy, checked on
        every animation frame inside the page; its value."""
        return self.evaluate(f"""new Promise((resolve, reject) => {{
            const check = {predicate}, until = performance.now() + {timeout * 1000};
            const step = () => {{
                let value; try {{ value = check(); }} catch (error) {{ value = null; }}
                if (value) resolve(value);
                else if (performance.now() > until) reject(new Error("timed out waiting for the page"));
                else requestAnimationFrame(step);
            }};
            step();
        }})""", timeout=timeout + 5)

    def press(self, key: str, code: int) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key,
                                                 "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code})

    def metrics(self) -> dict[str, float]:
        return {m["name"]: m["value"] for m in self.send("Performance.getMetrics")["metrics"]}
