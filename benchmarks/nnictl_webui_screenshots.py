"""Screenshots of NNI's web UI for a running or finished nnictl experiment (headless Chromium, DevTools protocol).

    python benchmarks/nnictl_webui_screenshots.py --port 8761 --out benchmarks/results/nnictl_webui_zc
    # writes <out>_overview.png and <out>_trials.png

With ``--run NNICTL_YML`` the script first creates that experiment itself (isolated ``HOME``/``NNI_CONFIG_DIR`` and
run directory in a temporary folder, ``mednas register``, ``nnictl create`` on ``--port``), adds the ``--set``
overrides to the tuner's ``overrides`` (a tiny budget), waits until it is DONE, takes the screenshots, stops the
experiment by its id and deletes the temporary folder, e.g. the U-Net segmentation example (``--unet`` is short
for this command with a tiny budget):

    python benchmarks/nnictl_webui_screenshots.py --unet --port 8791 --out /tmp/unet     # ~3-4 min on 2 cores
    # (the _trials.png of this run is results/nnictl_webui_unet_dsb2018.png)
    python benchmarks/nnictl_webui_screenshots.py --run examples/unet_dsb2018_nnictl.yml --concurrency 1 \
        --set strategy.params.population_size=2 --set data.params.size=64 ... --port 8791 --out /tmp/unet

The Trials-detail table shows the parameter columns ``describe``/``hash``/``mednas`` and the chosen metric keys
(the web UI's "Add/Remove columns" choice, stored in the browser's localStorage, is set before the page loads). Needs ``chromium`` (Debian package) and the ``websockets`` Python package. Browse and screenshot only
127.0.0.1: NNI's manager listens on all interfaces.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
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


#: ``--unet``: examples/unet_dsb2018_nnictl.yml with a tiny budget (2 + 2 U-Nets on 40 images of 64 px, 1 short
#: epoch each, one finalist retrained 1 short epoch): a few minutes on 2 CPU cores
UNET_YML = "examples/unet_dsb2018_nnictl.yml"
UNET_SET = ["strategy.params.population_size=2", "strategy.params.generations=1", "strategy.params.epochs_per_trial=1",
            "strategy.params.max_batches_per_epoch=2", "data.params.max_images=40", "data.params.size=64",
            "evaluator.epochs=1", "evaluator.max_batches_per_epoch=2"]
UNET_METRICS = ["default", "fitness", "test_dice"]


def _nni_get(port: int, path: str):
    return _json(f"http://127.0.0.1:{port}/api/v1/nni/{path}")


def run_experiment(exp_yml: str, port: int, sets: list[str], concurrency: int | None, out: str,
                   metrics: list[str], timeout_s: float = 1800.0, width: int = 1800, height: int = 1100) -> list[Path]:
    """``nnictl create`` ``exp_yml`` (tuner overrides + ``sets``) in a temporary HOME, wait for DONE, screenshot,
    stop the experiment by id, delete the temporary folder."""
    import yaml

    src = Path(exp_yml).resolve()
    exp = yaml.safe_load(src.read_text())
    tmp = Path(tempfile.mkdtemp(prefix="mednas-webui-"))
    env = {**os.environ, "HOME": str(tmp), "NNI_CONFIG_DIR": str(tmp / "nni-config"), "PYTHONWARNINGS": "ignore"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    code_dir = (src.parent / exp.get("trialCodeDirectory", ".")).resolve()
    args = exp["tuner"]["classArgs"]
    args["config"] = str((code_dir / args["config"]).resolve())
    args["overrides"] = list(args.get("overrides") or []) + [f"run.out_dir={tmp / 'runs'}"] + list(sets)
    exp["trialCodeDirectory"] = str(code_dir)
    if concurrency:
        exp["trialConcurrency"] = concurrency
    (tmp / "exp.yml").write_text(yaml.safe_dump(exp, sort_keys=False))
    nnictl = shutil.which("nnictl", path=env["PATH"])
    exp_id = None
    try:
        r = subprocess.run([sys.executable, "-m", "mednas_nni", "register"], env=env, capture_output=True,
                           text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"mednas register failed: {r.stderr}")
        for _ in range(3):       # a busy machine: nnictl or the manager may give up before the dispatcher connects
            r = subprocess.run([nnictl, "create", "--config", str(tmp / "exp.yml"), "--port", str(port)], env=env,
                               capture_output=True, text=True, timeout=300, cwd=code_dir)
            m = re.search(r"Experiment ID: (?:\x1b\[\d+m)?([A-Za-z0-9]+)", r.stdout)
            if m:
                exp_id = m.group(1)
                time.sleep(15)
                if r.returncode == 0 and _nni_get(port, "check-status")["status"] != "ERROR":
                    break
                subprocess.run([nnictl, "stop", exp_id], env=env, capture_output=True, timeout=120)
                exp_id = None
        if exp_id is None:
            raise SystemExit(f"nnictl create failed: {r.stdout}{r.stderr}")
        print(f"experiment {exp_id} on http://127.0.0.1:{port}", flush=True)
        deadline, status = time.time() + timeout_s, None
        while time.time() < deadline:
            status = _nni_get(port, "check-status")["status"]
            if status in ("DONE", "ERROR"):
                break
            time.sleep(5)
        trials = _nni_get(port, "trial-jobs")
        print(f"status {status}; trials: " + ", ".join(f"{t['sequenceId']}:{t['status']}" for t in trials), flush=True)
        return screenshots(port, out, metrics, width=width, height=height)
    finally:
        if exp_id:
            subprocess.run([nnictl, "stop", exp_id], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True, help="path prefix of the PNG files")
    ap.add_argument("--metric", action="append", default=[], help="metric key to show as a column (repeatable)")
    ap.add_argument("--width", type=int, help="viewport width (default 1800; --unet: 2200, so test_dice fits)")
    ap.add_argument("--height", type=int, help="viewport height (default 1100; --unet: 1000)")
    ap.add_argument("--run", metavar="NNICTL_YML", help="create this experiment first (temporary HOME), wait for DONE")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="tuner override (repeatable)")
    ap.add_argument("--concurrency", type=int, help="trialConcurrency for --run")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for DONE with --run")
    ap.add_argument("--unet", action="store_true", help=f"--run {UNET_YML} with a tiny budget, concurrency 1")
    args = ap.parse_args()
    if args.unet:
        args.run, args.set = UNET_YML, UNET_SET + args.set
        args.concurrency, args.metric = args.concurrency or 1, args.metric or UNET_METRICS
        args.width, args.height = args.width or 2200, args.height or 1000
    args.width, args.height = args.width or 1800, args.height or 1100
    if args.run:
        paths = run_experiment(args.run, args.port, args.set, args.concurrency, args.out, args.metric,
                               timeout_s=args.timeout, width=args.width, height=args.height)
    else:
        paths = screenshots(args.port, args.out, args.metric, width=args.width, height=args.height)
    for p in paths:
        print(p)


if __name__ == "__main__":
    main()
