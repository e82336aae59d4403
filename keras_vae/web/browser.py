"""Open a bundle's web page in headless Chromium, served from 127.0.0.1 by a thread of this
process: how the tests check the page and how `benchmarks/web_latency.py` measures it.

    with serve("bundle/") as (url, reports):
        html = dump_dom(url + "index.html?latency=0")        # the DOM after the page settled
        with DevTools() as tab:                               # mouse events, JavaScript
            tab.navigate(url + "index.html")
            tab.wait_for("document.body.dataset.ready === '1'")
    attrs = element_attributes(html, "selfcheck")            # {"data-max-abs-diff": ..., ...}
    report = page_report("bundle/")                          # real time: the page POSTs its numbers

`dump_dom` runs on Chromium's virtual time (`--virtual-time-budget`), so the page's clock does
not advance while it computes: use it for what the page computes, and `page_report` (real time)
for how long it takes.
"""

import html.parser
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROMIUM_ENV = "KERAS_VAE_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
REPORT_PATH = "/__report"


def find_chromium():
    """The Chromium executable ($KERAS_VAE_CHROMIUM, else the first of CHROMIUM_NAMES on PATH),
    or None."""
    if os.environ.get(CHROMIUM_ENV):
        return shutil.which(os.environ[CHROMIUM_ENV])
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm",
                      ".onnx": "application/octet-stream"}

    def __init__(self, *args, reports, **kwargs):
        self.reports = reports
        super().__init__(*args, **kwargs)

    def do_POST(self):  # noqa: N802 - the http.server API
        if self.path != REPORT_PATH:
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()
        self.reports.put(json.loads(body))

    def log_message(self, *args):  # quiet
        pass


@contextmanager
def serve(folder):
    """Serves `folder` on 127.0.0.1 (a free port) in a thread; yields (base URL ending in "/",
    a queue of the JSON reports POSTed to /__report)."""
    reports = queue.Queue()
    handler = partial(_Handler, directory=str(folder), reports=reports)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", reports
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _command(chromium, profile, *extra):
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--mute-audio",
            f"--user-data-dir={profile}", *extra]


def _run(args, timeout):
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium was not found: apt-get install chromium (or set "
                                f"${CHROMIUM_ENV}).")
    with tempfile.TemporaryDirectory(prefix="keras-vae-chromium-") as profile:
        done = subprocess.run(_command(chromium, profile, *args), capture_output=True,
                              text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"chromium exited with {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(url, budget_ms=60000, timeout=180):
    """The page's DOM (HTML text) once it has been idle, or after `budget_ms` of virtual time."""
    return _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)


def screenshot(url, path, width=1000, height=1800, budget_ms=60000, timeout=180):
    """Writes a PNG screenshot of the page (width x height CSS pixels) to `path`."""
    _run([f"--virtual-time-budget={budget_ms}", "--hide-scrollbars",
          f"--window-size={width},{height}", f"--screenshot={Path(path).resolve()}", url], timeout)


def page_report(folder, query="", timeout=300):
    """Opens `folder`'s index.html in real time and returns what the page POSTs when it has
    finished (its `report()`: the data attributes of #selfcheck, #samples, #score, #latency)."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("Chromium was not found: apt-get install chromium (or set "
                                f"${CHROMIUM_ENV}).")
    with serve(folder) as (base, reports), \
            tempfile.TemporaryDirectory(prefix="keras-vae-chromium-") as profile:
        sep = "&" if query else ""
        url = f"{base}index.html?{query}{sep}report={REPORT_PATH}"
        process = subprocess.Popen(_command(chromium, profile, "--remote-debugging-port=0", url),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return reports.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the page sent no report within {timeout} s") from None
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Attributes(html.parser.HTMLParser):
    def __init__(self, element_id):
        super().__init__()
        self.element_id = element_id
        self.found = None
        self._depth = None
        self.text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.found is None and attrs.get("id") == self.element_id:
            self.found = attrs
            self._depth = 0
        elif self._depth is not None:
            self._depth += 1

    def handle_endtag(self, tag):
        if self._depth is not None:
            if self._depth == 0:
                self._depth = None
            else:
                self._depth -= 1

    def handle_data(self, data):
        if self._depth is not None:
            self.text.append(data)


def element_attributes(page, element_id):
    """The attributes of the element with id `element_id` in the HTML text `page`, plus its
    text under the key "#text"; None when there is no such element."""
    parser = _Attributes(element_id)
    parser.feed(page)
    if parser.found is None:
        return None
    return {**parser.found, "#text": "".join(parser.text).strip()}


class DevTools:
    """A headless Chromium driven over the DevTools protocol (`--remote-debugging-pipe`:
    NUL-terminated JSON on file descriptors 3 and 4, no websocket), with one page attached.

        with DevTools() as tab:
            tab.navigate(url)
            tab.wait_for("document.body.dataset.ready === '1'")
            tab.call("Input.dispatchMouseEvent", type="mousePressed", x=10, y=10, ...)
    """

    def __init__(self, width=1000, height=1000):
        chromium = find_chromium()
        if chromium is None:
            raise FileNotFoundError("Chromium was not found: apt-get install chromium (or set "
                                    f"${CHROMIUM_ENV}).")
        self._profile = tempfile.TemporaryDirectory(prefix="keras-vae-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        command = _command(chromium, self._profile.name, "--remote-debugging-pipe",
                           f"--window-size={width},{height}")
        # Chromium reads commands from fd 3 and writes replies to fd 4.
        self._process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', *command],
            pass_fds=(to_browser_r, from_browser_w), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._session = None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]

    def call(self, method, **params):
        """Sends one command (to the attached page once there is one) and returns its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None and not method.startswith("Target."):
            message["sessionId"] = self._session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _read(self):
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def evaluate(self, expression):
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url):
        self.call("Page.navigate", url=url)

    def wait_for(self, expression, timeout=120.0, interval=0.1):
        """Polls until `expression` is truthy in the page; returns its value."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # the page is still loading
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} stayed false for {timeout} s")
            time.sleep(interval)

    def close(self):
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
