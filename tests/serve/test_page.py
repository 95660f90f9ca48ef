"""The search page in a real headless Chromium (Debian's `chromium` package), against the real
service: typed keys, Enter, the cards and posters, the API key field, playback.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: NUL-ended
JSON on its fds 3 and 4), so the test needs no websocket client and no driver package. Skipped
where /usr/bin/chromium (or $VLRT_CHROMIUM) is missing. VLRT_SCREENSHOT=1 writes the screenshot
to docs/serve-search.png; it always goes to the test's tmp folder.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from vlrt.client import Client

CHROMIUM = Path(os.environ.get("VLRT_CHROMIUM", "/usr/bin/chromium"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe"]
DOCS = Path(__file__).resolve().parents[2] / "docs"
H264 = 'video/mp4; codecs="avc1.64001e"'  # what synth.write_mp4 writes: High profile


class Browser:
    """Chromium reading DevTools commands from its fd 3 and answering on fd 4."""

    def __init__(self, profile: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        self.log = profile / "chromium.log"
        # bash moves Chromium's pipe ends onto fds 3 and 4 (pass_fds alone keeps their numbers);
        # first above 9, so that neither is 3 or 4 already and overwritten by the other
        cmd_r, out_w = (_above_nine(fd) for fd in (cmd_r, out_w))
        script = f'exec "$0" "$@" 3<&{cmd_r} 4>&{out_w} {cmd_r}<&- {out_w}>&-'
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["/bin/bash", "-c", script, str(CHROMIUM), *FLAGS,
                                          f"--user-data-dir={profile / 'profile'}", "about:blank"],
                                         pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        os.close(cmd_r)
        os.close(out_w)
        self._buf, self._id, self.events = b"", 0, []

    def send(self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._cmd_w, data):]
        deadline = time.monotonic() + timeout
        while True:
            answer = self._next(deadline, method)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def _next(self, deadline: float, waiting_for: str) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer {waiting_for}; its log: {self.log_tail()}")
            chunk = os.read(self._out_r, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium exited ({self.proc.poll()}); its log: {self.log_tail()}")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]

    def close(self) -> None:
        os.close(self._cmd_w)  # Chromium exits when its command pipe closes
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._out_r)


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class Page:
    def __init__(self, browser: Browser) -> None:
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        self.browser = browser
        self.session = browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, **params: Any) -> dict:
        return self.browser.send(method, self.session, **params)

    def js(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        status = self.js("document.getElementById('status')?.textContent")
        pytest.fail(f"{what}: not within {timeout:g} s (status line: {status!r})")

    def click(self, selector: str) -> None:
        """A real left click (mouse moved, pressed, released) at the middle of the element."""
        x, y = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect(); "
                       "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, text: str) -> None:
        """One keyDown (with its text) and keyUp per character, into the focused element."""
        for ch in text:
            self.send("Input.dispatchKeyEvent", type="keyDown", key=ch, text=ch)
            self.send("Input.dispatchKeyEvent", type="keyUp", key=ch)

    def press(self, key: str, code: int, text: str = "") -> None:
        self.send("Input.dispatchKeyEvent", type="keyDown", key=key, code=key, windowsVirtualKeyCode=code, text=text)
        self.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=key, windowsVirtualKeyCode=code)

    def viewport(self, width: int, height: int) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])


pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set VLRT_CHROMIUM)")


@pytest.fixture
def page(tmp_path):
    browser = Browser(tmp_path)
    try:
        page = Page(browser)
        for domain in ("Page", "Network", "Runtime"):
            page.send(f"{domain}.enable")
        page.viewport(1100, 760)
        yield page
    finally:
        browser.close()


CARDS = "[...document.querySelectorAll('#results .card')]"


@pytest.mark.slow
def test_search_page_in_chromium(served, page, tmp_path):
    query = served.captions[0]
    page.send("Page.navigate", url=f"{served.url}/")
    page.wait("document.readyState === 'complete' && document.activeElement?.id === 'q'", "the page loads, #q focused")

    # Without the key: the 401 is shown on the status line, no cards.
    page.type(query)
    page.press("Enter", 13, "\r")
    status = page.wait("document.querySelector('#status.error')?.textContent", "the 401 on the status line")
    assert re.fullmatch(r"Search failed: HTTP 401 unauthorized: a valid API key is required .*", status), status
    assert page.js(f"{CARDS}.length") == 0

    # With the key (typed into its field, kept in localStorage): cards whose posters load.
    page.click("#key")
    page.type(served.api_key)
    assert page.js("localStorage.getItem('vlrt.apiKey')") == served.api_key
    page.click("#q")
    page.press("Enter", 13, "\r")
    page.wait(f"{CARDS}.length > 0 && {CARDS}.every(c => c.querySelector('img')?.naturalWidth > 0)",
              "result cards with loaded posters")
    want = Client(served.url, api_key=served.api_key).search(query, k=24)
    cards = page.js(f"{CARDS}.map(c => [c.dataset.path, c.title, c.querySelector('.name').textContent, "
                    "c.querySelector('.score').textContent])")
    assert len(cards) == len(want) == len(served.clips)
    assert cards[0][0] == want[0]["path"]
    assert cards == [[h["path"], h["path"], Path(h["path"]).name, f"{h['score']:.3f}"] for h in want]
    assert page.js("document.querySelector('#results .card img').src").startswith("blob:")
    status = page.js("document.getElementById('status').textContent")
    assert re.fullmatch(rf"{len(want)} results · \d+ ms", status), status
    screenshot(page.screenshot(), tmp_path)

    # Narrow: one column of cards, nothing wider than the screen.
    page.viewport(360, 700)
    assert page.wait("document.documentElement.scrollWidth <= 360 || null", "no sideways scrolling at 360 px")
    page.viewport(1100, 760)

    # Click the first card: the clip is fetched with the key and played from a blob URL.
    page.click("#results .card")
    page.wait("document.getElementById('video').src.startsWith('blob:')", "the video gets its blob URL")
    media = [e for e in page.browser.events if e.get("method") == "Network.responseReceived"
             and "/v1/media?" in e["params"]["response"]["url"]]
    assert [e["params"]["response"]["status"] for e in media] == [200]
    if page.js(f"document.createElement('video').canPlayType({json.dumps(H264)})"):
        page.wait("document.getElementById('video').readyState >= 1", "the clip's metadata loads")
        assert page.js("(v => [v.videoWidth, v.videoHeight])(document.getElementById('video'))") == [64, 64]
        page.wait("document.getElementById('video').currentTime > 0", "the clip plays (autoplay)")
    else:  # a Chromium built without H.264: the fetch (200, above) is all there is to check
        assert page.js("document.getElementById('video').error?.code ?? 0") in (0, 4)

    # Every API request carried the key once it was set (an <img> or <video> src could not have).
    sent = [e["params"]["request"] for e in page.browser.events if e.get("method") == "Network.requestWillBeSent"
            and "/v1/" in e["params"]["request"]["url"]]
    keyed = [r["url"] for r in sent if r["headers"].get("Authorization") == f"Bearer {served.api_key}"]
    assert len(keyed) == len(sent) - 1 == 1 + len(want) + 1  # all but the first search: search, posters, media

    page.press("Escape", 27)
    page.wait("document.getElementById('player').hidden", "Escape closes the player")
    assert page.js("document.getElementById('video').getAttribute('src')") is None
    page.js("window.before = true")  # gone once the reload has replaced the document
    page.send("Page.reload")
    assert page.wait("!window.before && document.readyState === 'complete' && document.getElementById('key').value",
                     "the key is kept across a reload") == served.api_key


def screenshot(png: bytes, tmp_path: Path) -> None:
    assert png.startswith(b"\x89PNG")
    (tmp_path / "serve-search.png").write_bytes(png)
    if os.environ.get("VLRT_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        (DOCS / "serve-search.png").write_bytes(png)
