"""Screenshots of NNI's web UI for a running or finished nnictl experiment (headless Chromium, DevTools protocol).

    python benchmarks/nnictl_webui_screenshots.py --port 8761 --out benchmarks/results/nnictl_webui_zc
    # writes <out>_overview.png and <out>_trials.png

The Trials-detail table shows the parameter columns ``describe``/``hash``/``mednas`` and the chosen metric keys
(the web UI's "Add/Remove columns" choice, stored in the browser's localStorage, is set before the page loads). Needs ``chromium`` (Debian package) and the ``websockets`` Python package. Browse and screenshot only
127.0.0.1: NNI's manager listens on all interfaces.
"""
from __future__ import annotations

import argparse
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

__all__ = ["screenshots"]

_COLUMNS = ["sequenceId", "duration", "status", "latestAccuracy", "space/mednas", "space/hash"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class _Page:
    """A minimal DevTools-protocol client for one page."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws, self.n = connect(ws_url, max_size=64 * 2**20), 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True).get("result", {}).get("value")

    def shot(self, path: Path, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        time.sleep(1.0)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))


def screenshots(port: int, out: str, metrics: list[str], wait_s: float = 8.0, width: int = 1800,
                height: int = 1100) -> list[Path]:
    """Write ``<out>_overview.png`` and ``<out>_trials.png`` of the experiment served on 127.0.0.1:``port``."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    base = f"http://127.0.0.1:{port}"
    exp_id = _json(f"{base}/api/v1/nni/experiment")["id"]
    dport, profile = _free_port(), tempfile.mkdtemp(prefix="mednas-chromium-")
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                             "--disable-background-networking", "--disable-component-update", "--disable-sync",
                             "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1",
                             f"--remote-debugging-port={dport}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out_paths = []
    try:
        for _ in range(100):
            try:
                pages = [p for p in _json(f"http://127.0.0.1:{dport}/json/list") if p["type"] == "page"]
                break
            except OSError:
                time.sleep(0.2)
        page = _Page(pages[0]["webSocketDebuggerUrl"])
        page.call("Page.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=f"{base}/oview")
        time.sleep(wait_s)
        out_paths.append(Path(f"{out}_overview.png"))
        page.shot(out_paths[-1], width, height)
        cols = _COLUMNS + [f"metric/{m}" for m in metrics] + ["space/describe"]
        stored = json.dumps({"value": json.dumps(cols), "time": int(time.time() * 1000), "expire": 2592e6,
                             "isSelectall": False})
        page.js(f"localStorage.setItem({json.dumps(exp_id + '_columns')}, {json.dumps(stored)})")
        page.call("Page.navigate", url=f"{base}/detail")
        time.sleep(wait_s)
        page.js("window.scrollTo(0, document.body.scrollHeight)")
        time.sleep(2.0)
        out_paths.append(Path(f"{out}_trials.png"))
        page.shot(out_paths[-1], width, height)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
    return out_paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True, help="path prefix of the PNG files")
    ap.add_argument("--metric", action="append", default=[], help="metric key to show as a column (repeatable)")
    ap.add_argument("--width", type=int, default=1800)
    ap.add_argument("--height", type=int, default=1100)
    args = ap.parse_args()
    for p in screenshots(args.port, args.out, args.metric, width=args.width, height=args.height):
        print(p)


if __name__ == "__main__":
    main()
