"""Drive the page in a real headless Chromium: serve a site folder over HTTP, open the page in
self-test mode and collect what it posts back (the same JSON it writes into its DOM)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
RESULT_PATH = "/__selftest__"


class _Handler(SimpleHTTPRequestHandler):
    """A plain static server (what `python -m http.server` does) that also takes the result."""

    results: list[dict[str, Any]]
    requested: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.requested.append(self.path.split("?")[0])
        super().do_GET()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == RESULT_PATH:
            self.results.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        return


@contextmanager
def serving(folder: Path) -> Iterator[tuple[str, type[_Handler]]]:
    """``folder`` on an ephemeral loopback port: (base URL, the handler class with its
    ``results`` and ``requested`` lists)."""
    handler = type("Handler", (_Handler,), {"results": [], "requested": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def browser_profile() -> tempfile.TemporaryDirectory[str]:
    """A fresh profile folder; Chromium's helpers may still write into it as it is removed."""
    return tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)


def chromium(*args: str) -> list[str]:
    assert CHROMIUM is not None
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", *args]


def run_selftest(site: Path, images: list[str], timeout_s: float = 240) -> dict[str, Any]:
    """Open ``site``'s page with ``?selftest=<images>`` (paths relative to the site) on the
    WebAssembly engine and return the JSON the page posts; raises ``TimeoutError`` (with what the
    browser printed) when it posts nothing in time."""
    with serving(site) as (base, handler), browser_profile() as profile:
        query = ",".join(quote(i) for i in images)
        url = f"{base}/index.html?engine=wasm&selftest={query}"
        with subprocess.Popen(
            chromium(f"--user-data-dir={profile}", "--remote-debugging-port=0", url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            deadline = time.monotonic() + timeout_s
            try:
                while not handler.results and time.monotonic() < deadline:
                    if proc.poll() is not None:
                        break
                    time.sleep(0.2)
            finally:
                proc.kill()
                output = proc.communicate()[0]
        if not handler.results:
            raise TimeoutError(f"the page posted no result; Chromium said: {output[-2000:]}")
        return handler.results[0] | {"requested": list(handler.requested)}


def capture_after_choosing(site: Path, image: Path, out: Path, size: tuple[int, int]) -> None:
    """What a visitor sees: open the page, choose ``image`` in its file input (as a user's click
    would, through the DevTools protocol), wait for the top-5 table, save a PNG screenshot."""
    import base64
    import urllib.request

    from websockets.sync.client import connect

    with serving(site) as (base, _), browser_profile() as profile:
        args = chromium(
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            "--hide-scrollbars",
            "--remote-debugging-port=0",
            f"{base}/index.html",
        )
        with subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
            try:
                port = _devtools_port(Path(profile))
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as listing:
                    page = next(t for t in json.load(listing) if t["type"] == "page")
                with connect(page["webSocketDebuggerUrl"], max_size=2**26) as ws:
                    cdp = _Cdp(ws)
                    cdp.wait_for("!document.getElementById('file').disabled")
                    root = cdp.call("DOM.getDocument")["root"]["nodeId"]
                    node = cdp.call("DOM.querySelector", nodeId=root, selector="#file")["nodeId"]
                    cdp.call("DOM.setFileInputFiles", nodeId=node, files=[str(image)])
                    cdp.wait_for("document.querySelectorAll('#top tbody tr').length > 0")
                    shot = cdp.call("Page.captureScreenshot", format="png")["data"]
                out.write_bytes(base64.b64decode(shot))
            finally:
                proc.kill()


def _devtools_port(profile: Path, timeout_s: float = 30) -> int:
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().splitlines()[0])
        time.sleep(0.1)
    raise TimeoutError("Chromium wrote no DevToolsActivePort")


class _Cdp:
    """Just enough of the DevTools protocol: numbered calls, and polling an expression."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id = ws, 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply["result"])

    def wait_for(self, expression: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
            if result["result"].get("value") is True:
                return
            time.sleep(0.2)
        raise TimeoutError(f"the page never reached: {expression}")
