"""Screenshot one page of a local web UI with headless Chromium, driven over the DevTools protocol.

Called by take.sh (see there); usable alone:

    python shoot.py OUT.png URL [--wait-text TEXT]... [--local-storage KEY=VALUE]... \
        [--click-text TEXT | --click-css CSS | --type CSS TEXT | --scroll-css CSS]... \
        [--size 1600x1000] [--timeout 90]

Unlike `chromium --screenshot`, this waits until the single-page app has really rendered: every
--wait-text must be in the page's visible text, and the text must have stopped changing (or have
held every --wait-text for 10 s, for pages with ticking clocks).

--local-storage items (UI preferences) are set after a first load, then the page is loaded
again: single-page apps write their defaults there on a first visit.

The actions are then done in their order, the page settling after each:
  --click-text  clicks the first visible button, link, tab, menu item or label whose text (or
                aria-label) is exactly TEXT;
  --click-css   clicks the first visible element matching CSS;
  --type        focuses the element matching CSS and types TEXT as a user would;
  --scroll-css  scrolls the page until the element matching CSS is at the top.
An action whose element is not on the page is skipped with a note (not an error).

Exit status 0: captured with every --wait-text present; 3: captured anyway after the timeout
(the PNG shows what was there, for debugging); 1: no capture.

Chromium may only reach 127.0.0.1: every other host name resolves to nothing
(--host-resolver-rules), so nothing leaves the machine even if a UI tries to load a font or
phone home. Needs the `websockets` package (a Prefect dependency, so the project's venv has it).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--hide-scrollbars",
    "--mute-audio",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]

# Visible text of the page; the first visible element with the given own text / matching a CSS
# selector (null if none).
JS_TEXT = "document.body ? document.body.innerText : ''"
JS_FIND_TEXT = """
((text) => {
  const sel = 'button, a, [role=button], [role=tab], [role=radio], [role=menuitem], '
    + '[role=menuitemradio], [role=menuitemcheckbox], [role=option], [role=treeitem], '
    + 'label, summary';
  for (const el of document.querySelectorAll(sel)) {
    const t = (el.innerText || '').trim() || (el.getAttribute('aria-label') || '').trim();
    const r = el.getBoundingClientRect();
    if (t === text && r.width > 0 && r.height > 0) return el;
  }
  return null;
})"""
JS_FIND_CSS = """
((selector) => {
  for (const el of document.querySelectorAll(selector)) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) return el;
  }
  return null;
})"""


class Page:
    """The minimum of the DevTools protocol: commands on one page target."""

    def __init__(self, ws_url: str):
        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.next_id = 0

    def send(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == mid:  # events (no id) and stale replies are skipped
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expression: str):
        res = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        return res.get("result", {}).get("value")

    def close(self):
        self.ws.close()


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("shoot.py: no Chromium found (apt-get install -y chromium, or set CHROMIUM=...)")


def stop(proc: subprocess.Popen) -> None:
    """Stop the browser and its helper processes (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            proc.wait()
            return
        except subprocess.TimeoutExpired:
            pass


def launch(chromium: str, profile: str, width: int, height: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return proc, devtools_page(proc, Path(profile, "DevToolsActivePort"))
    except BaseException:
        stop(proc)
        raise


def devtools_page(proc: subprocess.Popen, port_file: Path) -> str:
    """The DevTools websocket URL of the browser's first page, once it listens."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode}")
        if port_file.exists() and port_file.read_text().count("\n") >= 1:
            port = port_file.read_text().split("\n")[0].strip()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                    targets = json.load(r)
            except OSError:  # not listening yet
                targets = []
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.25)
    raise RuntimeError("chromium did not open its DevTools port within 60 s")


def load(page: Page, url: str, timeout: float = 60) -> None:
    """Load url as a new document and wait until it has loaded. It goes through about:blank: were
    only the #fragment to change, the app would keep running (and keep its state)."""
    for target in ("about:blank", url):
        page.send("Page.navigate", url=target)
        deadline = time.monotonic() + timeout
        while True:
            try:
                href, state = page.eval("[location.href, document.readyState]")
            except (RuntimeError, TypeError):  # the context went away mid-navigation
                href, state = None, None
            if state == "complete" and (href == "about:blank") == (target == "about:blank"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not load within {timeout:.0f} s")
            time.sleep(0.25)


def wait_settled(
    page: Page,
    wait_texts: list[str],
    timeout: float,
    quiet: float = 2.0,
    patience: float = 10.0,
    report: bool = True,
) -> bool:
    """Wait until the page shows text, every wait_text among it, and the text has not changed for
    `quiet` s (or every wait_text has been there for `patience` s: a page may show a ticking
    duration)."""
    deadline = time.monotonic() + timeout
    last, changed, found = None, time.monotonic(), None
    while time.monotonic() < deadline:
        text = page.eval(JS_TEXT) or ""
        now = time.monotonic()
        if text != last:
            last, changed = text, now
        if text.strip() and all(t in text for t in wait_texts):
            found = found or now
            if now - changed >= quiet or now - found >= patience:
                return True
        else:
            found = None
        time.sleep(0.25)
    if report:
        missing = [t for t in wait_texts if t not in (last or "")]
        print(f"shoot.py: timed out after {timeout:.0f}s; missing text: {missing}", file=sys.stderr)
    return False


def act(page: Page, kind: str, arg) -> bool:
    """Do one action; False (and a note) when its element is not on the page."""
    if kind == "type":
        selector, text = arg
        found = page.eval(
            f"(() => {{ const el = {JS_FIND_CSS}({json.dumps(selector)});"
            " if (!el) return false; el.focus(); el.click(); return true; })()"
        )
        if found:
            page.send("Input.insertText", text=text)
            page.eval("document.activeElement && document.activeElement.blur()")
    else:
        finder = JS_FIND_TEXT if kind == "click-text" else JS_FIND_CSS
        how = "el.scrollIntoView({block: 'start'})" if kind == "scroll-css" else "el.click()"
        found = page.eval(
            f"(() => {{ const el = {finder}({json.dumps(arg)});"
            f" if (!el) return false; {how}; return true; }})()"
        )
    if not found:
        print(f"shoot.py: {kind} {arg!r}: not on the page, nothing to do", file=sys.stderr)
    return bool(found)


def shoot(
    out: str,
    url: str,
    wait_texts: list[str],
    actions: list[tuple],
    local_storage: dict[str, str],
    width: int,
    height: int,
    timeout: float,
) -> int:
    profile = tempfile.mkdtemp(prefix="shoot-chromium-")
    proc = None
    try:
        proc, ws_url = launch(find_chromium(), profile, width, height)
        page = Page(ws_url)
        page.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        load(page, url)
        if local_storage:
            # Single-page apps write their defaults into local storage on a first visit, so the
            # items are set after a first load, and the page is loaded again.
            wait_settled(page, wait_texts, min(timeout, 30), quiet=1.5, report=False)
            for key, value in local_storage.items():
                page.eval(f"localStorage.setItem({json.dumps(key)}, {json.dumps(value)})")
            load(page, url)
        ok = wait_settled(page, wait_texts, timeout)
        for kind, arg in actions:
            if act(page, kind, arg):
                ok = wait_settled(page, wait_texts, timeout / 2, quiet=1.5) and ok
        time.sleep(1.0)  # let charts finish their animations
        data = page.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
        Path(out).write_bytes(base64.b64decode(data["data"]))
        page.close()
        print(f"shoot.py: {out} <- {url}" + ("" if ok else " (INCOMPLETE, see above)"))
        return 0 if ok else 3
    except Exception as e:  # noqa: BLE001 - report and fail this shot only
        print(f"shoot.py: {url}: {e}", file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop(proc)
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("url")
    ap.add_argument("--wait-text", action="append", default=[])

    class Action(argparse.Action):  # keeps the actions in their command-line order
        def __call__(self, parser, namespace, values, option_string=None):
            arg = values[0] if len(values) == 1 else tuple(values)
            namespace.actions = [*(namespace.actions or []), (option_string.lstrip("-"), arg)]

    ap.add_argument("--click-text", action=Action, nargs=1, metavar="TEXT")
    ap.add_argument("--click-css", action=Action, nargs=1, metavar="CSS")
    ap.add_argument("--type", action=Action, nargs=2, metavar=("CSS", "TEXT"))
    ap.add_argument("--scroll-css", action=Action, nargs=1, metavar="CSS")
    ap.set_defaults(actions=[])
    ap.add_argument("--local-storage", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--size", default="1600x1000")
    ap.add_argument("--timeout", type=float, default=90)
    a = ap.parse_args()
    width, height = (int(v) for v in a.size.lower().split("x"))
    storage = dict(item.split("=", 1) for item in a.local_storage)
    return shoot(a.out, a.url, a.wait_text, a.actions, storage, width, height, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
