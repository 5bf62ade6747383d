"""A real server in its own process, as `python app.py` runs it: started on a loopback socket the test holds,
stopped by a signal."""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]

# The parent binds the loopback socket and hands it down: no port race, and a restarted server answers
# on the same address (connections made while it is down wait in the backlog).
SERVER = ("import socket, sys; from inpaint.api import create_app; from inpaint.server import Server, server_config; "
          "Server(server_config(create_app(with_ui=sys.argv[2] == 'ui'), log_level='warning'))"
          ".run(sockets=[socket.socket(fileno=int(sys.argv[1]))])")


@contextmanager
def loopback_socket():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield sock, f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def server_env(data: Path, models_dir: Path, **settings_env: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPAINT_")}
    return {**env, "INPAINT_DATA_DIR": str(data), "INPAINT_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1",
            **settings_env}


def start_server(sock: socket.socket, url: str, env: dict, log: Path, *, ui: bool = False,
                 headers: dict | None = None, timeout: float = 180) -> subprocess.Popen:
    """Starts the server on `sock` and returns once it answers `GET /models`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, str(sock.fileno()), "ui" if ui else "api"],
                                cwd=REPO, env=env, pass_fds=(sock.fileno(),), stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the server did not start:\n{log.read_text()[-3000:]}"
            try:
                if http.get("/models").status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            time.sleep(0.2)


def stop_server(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Stops the server and returns its exit status: uvicorn re-raises SIGTERM once it has shut down
    gracefully, so a clean stop reads -SIGTERM."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return proc.returncode
