"""`startup`: how long `python app.py` takes to answer `/`, against importing the web stack it stands on.

The reference is `python -c "import gradio, fastapi"`: the least any server built on them can take. Each round
starts both in fresh processes, in alternating order, so a change in the machine's load hits both alike.
Standard library only: the measuring process must not pay (or hide) the imports it measures.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .timing import Metric, log

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.05
START_TIMEOUT_S = 180.0
REFERENCE = "import gradio, fastapi"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def serve_once(*, settle_s: float = 1.0) -> tuple[float, float | None, bool]:
    """Seconds from `python app.py` starting until `GET /` answers 200; its RSS in MB once idle after that;
    and whether it had imported torch by then (diffusers and transformers cannot be imported without it)."""
    data_dir = Path(tempfile.mkdtemp(prefix="inpaint-startup-"))
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "INPAINT_DATA_DIR": str(data_dir),
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    env.pop("INPAINT_API_KEY", None)  # a key would put a login in front of `/`
    start = time.perf_counter()
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not _answers(port):
            if server.poll() is not None:
                raise RuntimeError(f"app.py exited with {server.returncode}: {server.stderr.read()[-2000:]}")
            if time.perf_counter() - start > START_TIMEOUT_S:
                raise RuntimeError(f"app.py did not answer / within {START_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
        elapsed = time.perf_counter() - start
        time.sleep(settle_s)
        rss = _rss_mb(server.pid)
        return elapsed, rss, _torch_loaded(server.pid)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stderr.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _torch_loaded(pid: int) -> bool:
    """Whether torch's shared libraries are mapped into the process: they are loaded by `import torch`."""
    try:
        return "/torch/lib/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def import_once() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", REFERENCE], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run(rounds: int) -> Metric:
    serve_times: list[float] = []
    import_times: list[float] = []
    rss: list[float] = []
    torch_loaded = False
    import_once()  # untimed: the first run fills the OS file cache for both
    for index in range(rounds):
        steps = ("serve", "import") if index % 2 == 0 else ("import", "serve")
        for step in steps:
            if step == "serve":
                seconds, megabytes, loaded = serve_once()
                serve_times.append(seconds)
                torch_loaded |= loaded
                if megabytes is not None:
                    rss.append(megabytes)
            else:
                import_times.append(import_once())
        log.info("  round %d/%d app.py answers / in %.2f s, import takes %.2f s", index + 1, rounds,
                 serve_times[-1], import_times[-1])
    ratio = statistics.median(s / i for s, i in zip(serve_times, import_times))
    detail = (f"`python app.py` until GET / answers 200 (polled every {POLL_S * 1000:.0f} ms) over "
              f"`python -c \"{REFERENCE}\"`, median of {rounds} alternating rounds: app median "
              f"{statistics.median(serve_times):.2f} s (min {min(serve_times):.2f}), import median "
              f"{statistics.median(import_times):.2f} s (min {min(import_times):.2f})")
    if rss:
        detail += f"; idle RSS of app.py {statistics.median(rss):.0f} MB"
    detail += f"; torch imported at start: {'yes' if torch_loaded else 'no'}"
    return Metric("startup", round(ratio, 3), "<= 1.5", "x", detail)


if __name__ == "__main__":
    import json

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 3).to_json()))
