"""Screenshot one page of a local web UI with headless Chromium, driven over the DevTools protocol.

Called by take.sh (see there); usable alone:

    python shoot.py OUT.png URL [--wait-text TEXT]... [--click-text TEXT]... \
        [--local-storage KEY=VALUE]... [--size 1600x1000] [--timeout 90]

Unlike `chromium --screenshot`, this waits until the single-page app has really rendered: every
--wait-text must be in the page's visible text and the text must have stopped changing. Then it
clicks, once each, the buttons/links/tabs whose visible text is exactly a --click-text (if there
is one; a missing one is not an error), waits for the page to settle again and takes the shot.
--local-storage items are set before the page's own scripts run (UI preferences such as
"close the side panel"). Exit status 0: captured with every --wait-text present; 3: captured
anyway after the timeout (the PNG shows what was there, for debugging); 1: no capture.

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

# Visible text of the page, and a click on the first visible clickable element whose own text is
# exactly the given one (buttons, links, tabs, radio/segmented controls, menu items).
JS_TEXT = "document.body ? document.body.innerText : ''"
JS_CLICK = """
(text) => {
  const sel = 'button, a, [role=button], [role=tab], [role=radio], [role=menuitem], '
    + '[role=menuitemradio], [role=option], label, summary';
  for (const el of document.querySelectorAll(sel)) {
    const t = (el.innerText || el.getAttribute('aria-label') || '').trim();
    const r = el.getBoundingClientRect();
    if (t === text && r.width > 0 && r.height > 0) { el.click(); return true; }
  }
  return false;
}
"""


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
        res = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        return res.get("result", {}).get("value")

    def close(self):
        self.ws.close()


def find_chromium() -> str:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    sys.exit("shoot.py: no Chromium found (apt-get install -y chromium, or set CHROMIUM=...)")


def launch(chromium: str, profile: str, width: int, height: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    port_file = Path(profile, "DevToolsActivePort")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode}")
        if port_file.exists() and port_file.read_text().count("\n") >= 1:
            port = port_file.read_text().split("\n")[0].strip()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        time.sleep(0.25)
    raise RuntimeError("chromium did not open its DevTools port within 60 s")


def wait_settled(page: Page, wait_texts: list[str], timeout: float, quiet: float = 2.0) -> bool:
    """Wait until every wait_text is on the page and the page text has not changed for `quiet` s."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        text = page.eval(JS_TEXT) or ""
        if text != last:
            last, since = text, time.monotonic()
        elif all(t in text for t in wait_texts) and time.monotonic() - since >= quiet:
            return True
        time.sleep(0.25)
    missing = [t for t in wait_texts if t not in (last or "")]
    print(f"shoot.py: timed out after {timeout:.0f}s; missing text: {missing}", file=sys.stderr)
    return False


def shoot(out: str, url: str, wait_texts: list[str], click_texts: list[str],
          local_storage: dict[str, str], width: int, height: int, timeout: float) -> int:
    profile = tempfile.mkdtemp(prefix="shoot-chromium-")
    proc = None
    try:
        proc, ws_url = launch(find_chromium(), profile, width, height)
        page = Page(ws_url)
        page.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        if local_storage:
            items = json.dumps(local_storage)
            page.send("Page.addScriptToEvaluateOnNewDocument", source=(
                f"try {{ for (const [k, v] of Object.entries({items})) localStorage.setItem(k, v); }}"
                " catch (e) {}"))
        page.send("Page.navigate", url=url)
        ok = wait_settled(page, wait_texts, timeout)
        for text in click_texts:
            if page.eval(f"({JS_CLICK})({json.dumps(text)})"):
                ok = wait_settled(page, wait_texts, timeout / 2, quiet=1.5) and ok
            else:
                print(f"shoot.py: nothing to click labelled {text!r}", file=sys.stderr)
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
        if proc is not None:  # the browser and its helper processes: its own process group
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=wait)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
        shutil.rmtree(profile, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("url")
    ap.add_argument("--wait-text", action="append", default=[])
    ap.add_argument("--click-text", action="append", default=[])
    ap.add_argument("--local-storage", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--size", default="1600x1000")
    ap.add_argument("--timeout", type=float, default=90)
    a = ap.parse_args()
    width, height = (int(v) for v in a.size.lower().split("x"))
    storage = dict(item.split("=", 1) for item in a.local_storage)
    return shoot(a.out, a.url, a.wait_text, a.click_text, storage, width, height, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
