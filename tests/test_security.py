"""Attacks from outside, against a real server started as `python app.py` starts it: files of the server named
as Gradio file inputs."""

import base64
import json
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import uvicorn
from fastapi.testclient import TestClient
from PIL import Image

from inpaint import imageops
from inpaint.api import create_app
from inpaint.api.assets import AssetFileResponse
from inpaint.jobs import INTERRUPTED
from inpaint.server import server_config
from inpaint.web_security import HEADER_TIMEOUT_S, MAX_AUTH_FAILURES, HeaderTimeoutProtocol
from tests.support.api import FINAL, KEY, assert_error, body
from tests.support.images import as_url, data_url, encoded, photo, rect_mask
from tests.support.servers import REPO, loopback_socket, server_env, start_server, stop_server

SECRET_ENV = "INPAINT_TEST_SECRET"  # a marker in the server's environment: /proc/self/environ must not leak it
SECRET = "environ-marker-" + uuid.uuid4().hex
# Component types whose values Gradio moves into its cache (a FileData anywhere in their payload).
FILE_COMPONENTS = {"image", "imageeditor", "gallery", "imageslider", "file", "uploadbutton", "video", "audio",
                   "model3d", "downloadbutton"}


# How a client can name a file of the server in a file input. Gradio checks the first (its FileData marker); it
# hands the others to the component unchecked, so the project's own check is what refuses them.
FILE_SHAPES = {
    "gradio's FileData": lambda path: {"path": path, "meta": {"_type": "gradio.FileData"}},
    "no meta": lambda path: {"path": path},
    "empty meta": lambda path: {"path": path, "meta": {}},
    "another type": lambda path: {"path": path, "meta": {"_type": "gradio.Other"}},
    "url and name": lambda path: {"path": path, "url": f"/gradio_api/file={path}", "orig_name": "picture.png"},
    "a bare path": lambda path: path,
}


def file_data(path: str) -> dict:
    return FILE_SHAPES["gradio's FileData"](path)


def hostile_value(component_type: str, named):
    """A value of `component_type` whose every file is `named` (a file input's value)."""
    return {"imageeditor": {"background": named, "layers": [named], "composite": named},
            "gallery": [{"image": named, "caption": None}],
            "imageslider": [named, named]}.get(component_type, named)


def outcome(http: httpx.Client, path: str, **params) -> tuple[bool, str]:
    """Follows one event stream to its end: whether it succeeded, and everything it said."""
    said, succeeded = [], False
    with http.stream("GET", path, params=params, timeout=120) as stream:
        name = None
        for line in stream.iter_lines():
            said.append(line)
            if line.startswith("event:"):
                name = line[6:].strip()
                continue
            if not line.startswith("data:"):
                continue
            try:
                data = json.loads(line[5:])
            except json.JSONDecodeError:
                data = None
            if isinstance(data, dict) and data.get("msg") == "process_completed":  # the queue's stream
                succeeded = bool(data.get("success"))
                break
            if name in ("complete", "error"):  # the named API's stream
                succeeded = name == "complete"
                break
    return succeeded, "\n".join(said)


def told(said: str, target: str) -> str:
    """What an event stream told its caller (its outputs, errors and warnings), without what differs from one call
    to the next (ids, durations, queue estimates) and with the path the caller named blanked: the answers for two
    paths can then be compared."""
    kept = []
    for line in said.splitlines():
        if not line.startswith("data:"):
            continue
        try:
            data = json.loads(line[5:])
        except json.JSONDecodeError:
            kept.append(line)
            continue
        if not isinstance(data, dict):
            kept.append(data)  # the named API's outputs, or its error
        elif data.get("msg") in ("process_completed", "process_generating", "log"):
            output = data.get("output") or {}
            kept.append([data.get("success"), output.get("error"), output.get("data"), data.get("log")])
    return json.dumps(kept).replace(target, "<path>")


def attack_every_endpoint(http: httpx.Client, target: str, shape) -> dict[str, tuple[bool, str]]:
    """Every event of the studio, private ones included, called by its fn_index with `target` in each file input
    (in `shape`), and the public API by name likewise: by endpoint, whether it succeeded and what it said."""
    config = http.get("/config").json()
    types = {component["id"]: component["type"] for component in config["components"]}
    named, outcomes = shape(target), {}
    for dependency in config["dependencies"]:
        inputs = [types.get(i) for i in dependency["inputs"]]
        if not dependency.get("backend_fn") or not FILE_COMPONENTS & set(inputs):
            continue
        data = [hostile_value(kind, named) if kind in FILE_COMPONENTS else None for kind in inputs]
        session = uuid.uuid4().hex
        joined = http.post("/gradio_api/queue/join", json={"data": data, "fn_index": dependency["id"],
                                                           "session_hash": session, "event_data": None})
        label = f"fn {dependency['id']} ({dependency.get('api_name')})"
        outcomes[label] = (outcome(http, "/gradio_api/queue/data", session_hash=session) if joined.is_success
                           else (False, joined.text))
    for name, endpoint in http.get("/gradio_api/info").json()["named_endpoints"].items():
        kinds = [p["component"].lower().replace(" ", "") for p in endpoint["parameters"]]
        data = [hostile_value(kind, named) if kind in FILE_COMPONENTS else None for kind in kinds]
        started = http.post(f"/gradio_api/call{name}", json={"data": data})
        outcomes[f"api {name}"] = (outcome(http, f"/gradio_api/call{name}/{started.json()['event_id']}")
                                   if started.is_success else (False, started.text))
    assert len(outcomes) >= 4, f"too few file-taking endpoints found to attack: {sorted(outcomes)}"
    return outcomes


def attack_the_painted_mask(http: httpx.Client, target: str) -> tuple[bool, str]:
    """The run through the public API with a real uploaded picture and `target` as the painted mask: a string,
    which the page fills with a PNG data URL."""
    picture = http.post("/gradio_api/upload", files={"files": ("picture.png", imageops.decode_data_url(data_url(photo(64, 64)), field="image"), "image/png")})
    parameters = http.get("/gradio_api/info").json()["named_endpoints"]["/inpaint"]["parameters"]
    given = {"image": file_data(picture.json()[0]), "sketch": target, "modelId": "opencv-telea"}
    started = http.post("/gradio_api/call/inpaint", json={"data": [given.get(p["parameter_name"], p.get("parameter_default"))
                                                                  for p in parameters]})
    return outcome(http, f"/gradio_api/call/inpaint/{started.json()['event_id']}")


@pytest.mark.parametrize("keyed", [False, True], ids=["keyless", "keyed"])
def test_no_file_of_the_server_can_be_read_through_the_studios_inputs(tmp_path, models_dir, keyed):
    data, gradio_cache = tmp_path / "data", tmp_path / "gradio-cache"
    settings = {"INPAINT_API_KEY": KEY} if keyed else {}
    env = {**server_env(data, models_dir, **settings), SECRET_ENV: SECRET, "GRADIO_TEMP_DIR": str(gradio_cache)}
    headers = {"Authorization": f"Bearer {KEY}"} if keyed else None
    secret_text, secret_png = tmp_path / "secret.txt", tmp_path / "secret.png"
    secret_text.write_text(f"secret-text-{uuid.uuid4().hex}\n")
    photo(96, 96, seed=11).save(secret_png)
    with loopback_socket() as (sock, url):
        proc = start_server(sock, url, env, tmp_path / "server.log", ui=True, headers=headers)
        try:
            with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
                if keyed:  # a logged-in visitor of the studio must not read the server's files either
                    assert http.post("/login", data={"username": "me", "password": KEY}).status_code == 200
                hidden = photo(96, 96, seed=7)
                asset = http.post("/assets", json={"image": data_url(hidden), "hide": True}).json()["asset"]
                asset_file = data / "files" / f"{asset['id']}.png"
                targets = {  # a file, and what of it must not come out
                    str(secret_text): secret_text.read_bytes()[:40],
                    str(secret_png): secret_png.read_bytes()[-40:],
                    str(asset_file): asset_file.read_bytes()[-40:],
                    "/proc/self/environ": SECRET.encode(),
                }
                # Logged in, the shapes Gradio checks and does not check; keyless, every shape.
                shapes = ["gradio's FileData", "no meta"] if keyed else list(FILE_SHAPES)
                for shape_name in shapes:
                    # No existence either: a file that is there and one that is not get the same answers. (The
                    # missing path differs in its middle: an error that quotes a long input shortens it there.)
                    named, middle = str(secret_text), len(str(secret_text)) // 2
                    missing = named[:middle] + "~" + named[middle + 1:]
                    absent = attack_every_endpoint(http, missing, FILE_SHAPES[shape_name])
                    for target, secret in targets.items():
                        outcomes = attack_every_endpoint(http, target, FILE_SHAPES[shape_name])
                        for label, (succeeded, said) in outcomes.items():
                            where = (shape_name, target, label, said[-1500:])
                            assert secret.decode("latin-1") not in said, where
                            if target == str(secret_text):
                                assert told(said, target) == told(absent[label][1], missing), where
                            # No pixels: nothing decoded the file (no picture size, no preview, no result).
                            assert '"path"' not in told(said, target), where
                            assert not succeeded or "is not a file this page uploaded" in said, where
                # The painted mask is a string: a file's name in it is refused, not read.
                for target, secret in targets.items():
                    succeeded, said = attack_the_painted_mask(http, target)
                    assert not succeeded and "Painted mask: must be a PNG data URL" in said, said[-1500:]
                    assert secret.decode("latin-1") not in said
                # Nothing was copied where /gradio_api/file= serves from, and the paths themselves are refused.
                for target, secret in targets.items():
                    leaked = [p for p in gradio_cache.rglob("*") if p.is_file() and secret in p.read_bytes()]
                    assert leaked == [], (target, leaked)
                    assert http.get(f"/gradio_api/file={target}").status_code in (403, 404)
        finally:
            stop_server(proc)


# ---- what a web page on another site can make a browser send ---------------------------------------------

def test_keyless_server_answers_loopback_names_only(engine):
    with TestClient(create_app(engine, api_key=None, allowed_hosts=("localhost", "127.0.0.1", "[::1]"),
                               with_ui=False), base_url="http://127.0.0.1:7860") as client:
        assert client.get("/models").status_code == 200
        for host in ("localhost:7860", "[::1]:7860", "LOCALHOST"):
            assert client.get("/models", headers={"Host": host}).status_code == 200, host
        # DNS rebinding: the attacker's name resolves to 127.0.0.1, and only the Host header says so.
        for host in ("attacker.example", "attacker.example:7860", "127.0.0.1.attacker.example", ""):
            assert_error(client.get("/models", headers={"Host": host}), 400, "host", "INPAINT_ALLOWED_HOSTS")
            assert_error(client.post("/generate/inpaint", json=body(), headers={"Host": host}), 400, "host")
    assert engine.store.list(include_hidden=True) == []


def test_allowed_hosts_take_patterns_and_a_key_allows_any_host(engine):
    with TestClient(create_app(engine, api_key=None, allowed_hosts=("*.example.com",), with_ui=False)) as client:
        assert client.get("/models", headers={"Host": "studio.example.com"}).status_code == 200
        assert client.get("/models", headers={"Host": "example.org"}).status_code == 400
    with TestClient(create_app(engine, api_key=KEY, allowed_hosts=("*",), with_ui=False)) as client:
        assert client.get("/models", headers={"Host": "anything.example", "Authorization": f"Bearer {KEY}"}
                          ).status_code == 200


@pytest.mark.parametrize("with_ui", [False, True], ids=["api", "studio"])
def test_state_changing_requests_from_another_site_are_refused(engine, with_ui):
    with TestClient(create_app(engine, api_key=None, with_ui=with_ui), base_url="http://127.0.0.1:7860") as client:
        foreign = {"Origin": "http://attacker.example"}
        for method, path in [("POST", "/generate/inpaint"), ("POST", "/assets"), ("POST", f"/jobs/job_{'a' * 22}/cancel"),
                             ("DELETE", f"/assets/asset_{'a' * 22}"), *([("POST", "/gradio_api/queue/join"),
                                                                         ("POST", "/gradio_api/upload")] * with_ui)]:
            response = client.request(method, path, json=body(), headers=foreign)
            assert_error(response, 403, "origin", "attacker.example")
        assert_error(client.post("/assets", json={"image": data_url(photo(64, 64))}, headers={"Origin": "null"}),
                     403, "origin")
        # Another port of this very host is another program's page: another site.
        for page in ("http://127.0.0.1:9999", "http://localhost:9999", "http://localhost", "ftp://127.0.0.1:7860",
                     "http://127.0.0.1:notaport"):
            assert_error(client.post("/assets", json={"image": data_url(photo(64, 64))}, headers={"Origin": page}),
                         403, "origin")
        # The studio's own page, and clients that send no Origin (curl, scripts), go on.
        for page in ("http://127.0.0.1:7860", "http://localhost:7860"):  # this server, by a name it answers to
            same = {"Origin": page}
            assert client.post("/assets", json={"image": data_url(photo(64, 64))}, headers=same).status_code == 200
        assert client.post("/assets", json={"image": data_url(photo(64, 64))}).status_code == 200
        assert client.get("/models", headers=foreign).status_code == 200  # reading: CORS keeps the answer from it
    assert len(engine.store.list()) == 3


def test_bodies_must_be_declared_json(client, engine):
    raw = json.dumps(body()).encode()
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        headers = {"Content-Type": content_type} if content_type else {}
        assert_error(client.post("/generate/inpaint", content=raw, headers=headers), 415, "body", "application/json")
        assert_error(client.post("/assets", content=raw, headers=headers), 415, "body")
    assert engine.store.list(include_hidden=True) == []
    assert client.post("/generate/inpaint", content=raw,
                       headers={"Content-Type": "application/json; charset=utf-8"}).status_code == 200


# ---- the key ----------------------------------------------------------------------------------------------

def test_the_challenge_is_bearer_so_browsers_cache_no_credentials(engine):
    with TestClient(create_app(engine, api_key=KEY, with_ui=False)) as client:
        response = client.get("/models")
        assert response.status_code == 401 and response.headers["www-authenticate"] == 'Bearer realm="inpaint"'
        assert client.get("/models", auth=("anyone", KEY)).status_code == 200  # Basic is still accepted


def test_a_key_that_is_not_ascii_authenticates_over_rest_and_the_studio(engine):
    key = "clé-秘密-🔑"
    with TestClient(create_app(engine, api_key=key, with_ui=True)) as client:
        assert client.get("/models", headers={"Authorization": b"Bearer " + key.encode()}).status_code == 200
        basic = base64.b64encode(b"me:" + key.encode()).decode()
        assert client.get("/models", headers={"Authorization": f"Basic {basic}"}).status_code == 200
        assert client.get("/models", headers={"Authorization": b"Bearer " + key[:-1].encode()}).status_code == 401
        assert client.post("/login", data={"username": "me", "password": key}).status_code == 200


def test_repeated_wrong_keys_and_logins_are_throttled_but_the_right_key_goes_through(engine):
    """Clients behind one proxy share an address: one of them guessing locks out guesses, not the others."""
    with TestClient(create_app(engine, api_key=KEY, with_ui=True)) as client:
        for _ in range(MAX_AUTH_FAILURES):
            assert client.get("/models", headers={"Authorization": "Bearer guess"}).status_code == 401
        throttled = client.get("/models", headers={"Authorization": "Bearer guess"})
        assert_error(throttled, 429, "authorization", "too many failed attempts")
        assert 0 < int(throttled.headers["retry-after"]) <= 60
        assert_error(client.get("/models"), 429, "authorization")
        assert client.post("/login", data={"username": "me", "password": "guess"}).status_code == 429
        assert client.get("/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get("/models", auth=("me", KEY)).status_code == 200
        assert client.post("/login", data={"username": "me", "password": KEY}).status_code == 200
        assert client.get("/config").status_code == 200  # the login's session works
    with TestClient(create_app(engine, api_key=KEY, with_ui=True)) as client:  # the studio's login form alike
        for _ in range(MAX_AUTH_FAILURES):
            assert client.post("/login", data={"username": "me", "password": "guess"}).status_code == 400
        assert client.post("/login", data={"username": "me", "password": "guess"}).status_code == 429
        assert client.post("/login", data={"username": "me", "password": KEY}).status_code == 200


# ---- small things of HTTP -----------------------------------------------------------------------------------

def test_head_answers_the_headers_of_files_and_models(client):
    asset = client.post("/assets", json={"image": data_url(photo(64, 64))}).json()["asset"]
    for url in (asset["url"], f"{asset['url']}?original=true", "/models", f"/assets/{asset['id']}"):
        got, head = client.get(url), client.head(url)
        assert head.status_code == 200 and head.content == b"", url
        assert head.headers["content-type"] == got.headers["content-type"]
        assert int(head.headers["content-length"]) == len(got.content)


def test_a_file_of_several_chunks_comes_whole_and_in_any_range(client):
    noise = Image.fromarray(np.random.default_rng(3).integers(0, 256, (700, 700, 3), np.uint8))
    data = encoded(noise, "PNG")  # noise does not compress: over one chunk of the file response
    assert len(data) > AssetFileResponse.chunk_size
    asset = client.post("/assets", json={"image": as_url(data)}).json()["asset"]
    url = f"{asset['url']}?original=true"
    assert client.get(url).content == data
    across = (AssetFileResponse.chunk_size - 5, AssetFileResponse.chunk_size + 4)
    partial = client.get(url, headers={"Range": f"bytes={across[0]}-{across[1]}"})
    assert partial.status_code == 206 and partial.content == data[across[0]:across[1] + 1]


def test_range_errors_take_the_error_shape(client):
    asset = client.post("/assets", json={"image": data_url(photo(64, 64))}).json()["asset"]
    size = len(client.get(asset["url"]).content)
    partial = client.get(asset["url"], headers={"Range": "bytes=0-9"})
    assert partial.status_code == 206 and len(partial.content) == 10
    beyond = client.get(asset["url"], headers={"Range": f"bytes={size + 10}-"})
    assert_error(beyond, 416, "range", "outside")
    assert beyond.headers["content-range"] == f"bytes */{size}"
    assert_error(client.get(asset["url"], headers={"Range": "bytes=9-0"}), 400, "range", "malformed")


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/") for source in sources), sources  # nothing from a CDN
    for source in sources:
        assert client.get(source).status_code == 200, source


# ---- the server process: slow headers, shutdown with a studio tab open, one server per data folder -------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(data: Path, models_dir: Path, log: Path, **settings_env: str) -> tuple[subprocess.Popen, str]:
    """`python app.py`, as a user starts it, on a port of its own; returns once `/` answers."""
    port = free_port()
    env = server_env(data, models_dir, PORT=str(port), **settings_env)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the server did not start:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def test_headers_sent_a_byte_at_a_time_do_not_hold_a_connection(tmp_path, models_dir):
    proc, url = start_app(tmp_path / "data", models_dir, tmp_path / "server.log")
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=HEADER_TIMEOUT_S + 10) as slow:
            started, closed = time.monotonic(), False
            for byte in b"GET /models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow":
                slow.sendall(bytes([byte]))
                time.sleep(0.1)  # each byte resets uvicorn's own keep-alive timer
            # A generous deadline for the server to close it: the header timeout is what ends it, not its speed.
            while not closed and time.monotonic() - started < HEADER_TIMEOUT_S + 60:
                try:
                    slow.sendall(b"a")
                    time.sleep(0.5)
                except OSError:
                    closed = True
        assert closed, "a connection still sending its headers was kept open"
        assert httpx.get(f"{url}/models", timeout=10).status_code == 200  # the server goes on
    finally:
        stop_server(proc)


def test_a_request_body_sent_a_byte_at_a_time_does_not_hold_a_connection(monkeypatch):
    monkeypatch.setattr(HeaderTimeoutProtocol, "body_timeout_s", 1.0)
    told = []

    async def reads_its_body(scope, receive, send):
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                told.append("the client left")
                return
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    port = free_port()
    server = uvicorn.Server(server_config(reads_its_body, host="127.0.0.1", port=port, lifespan="off",
                                          log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as slow:
            slow.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
            closed = False
            for _ in range(100):  # a byte every 0.2 s would take 200 s to send the whole body
                try:
                    slow.sendall(b"x")
                    closed = slow.recv(1) == b""
                except TimeoutError:
                    continue
                except OSError:
                    closed = True
                if closed:
                    break
        assert closed
        for _ in range(100):  # the app hears of it on its event loop, a moment after the socket closed
            if told:
                break
            time.sleep(0.1)
        assert told == ["the client left"]
        assert httpx.post(f"http://127.0.0.1:{port}/", content=b"x" * 1000).text == "ok"  # a whole body is read
    finally:
        server.should_exit = True
        thread.join(10)


def read_answer(sock: socket.socket) -> bytes:
    """One HTTP/1.1 answer with a Content-Length, read whole from a raw socket."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {received!r}"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        body += chunk
    return head


def test_a_kept_alive_connection_outlives_a_client_pool_idle_time(tmp_path, models_dir):
    # httpx keeps an idle connection 5 s: a server closing at 5 s too resets the request sent at that moment.
    proc, url = start_app(tmp_path / "data", models_dir, tmp_path / "server.log")
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            request = b"GET /models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            client.sendall(request)
            assert read_answer(client).startswith(b"HTTP/1.1 200")
            time.sleep(7)
            client.sendall(request)
            assert read_answer(client).startswith(b"HTTP/1.1 200")
    finally:
        stop_server(proc)


def test_sigterm_mid_job_stops_without_waiting_for_a_call_that_cannot_be_interrupted(tmp_path, models_dir):
    """A studio tab open (an event stream that never ends by itself) and a PatchMatch job running (a library call
    that no flag stops): the server stops anyway, and records the job as interrupted with what it finished."""
    data = tmp_path / "data"
    proc, url = start_app(data, models_dir, tmp_path / "server.log")
    tab = threading.Event()

    def studio_tab() -> None:  # the page keeps its heartbeat stream open for as long as it is shown
        try:
            with httpx.stream("GET", f"{url}/gradio_api/heartbeat/{uuid.uuid4().hex}", timeout=None) as stream:
                tab.set()
                for _ in stream.iter_bytes():
                    pass
        except httpx.HTTPError:
            pass

    threading.Thread(target=studio_tab, daemon=True).start()
    assert tab.wait(30)
    picture = photo(1024, 1024)
    hole = rect_mask(1024, 1024, (256, 256, 768, 768))  # a quarter of the picture: seconds per sample
    with httpx.Client(base_url=url, timeout=30) as http:
        job = http.post("/generate/inpaint", json=body(picture, hole, modelId="patchmatch", numSamples=16)).json()["job"]
        deadline = time.monotonic() + 300
        while not (running := http.get(f"/jobs/{job['jobId']}").json()["job"])["metadata"]["assetIds"]:
            assert time.monotonic() < deadline and running["status"] in ("queued", "in-progress"), running
            time.sleep(0.1)
    finished = running["metadata"]["assetIds"]  # the next sample's fill is under way
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    stopped_after = time.monotonic() - started
    with closing(sqlite3.connect(data / "inpaint.db")) as db:
        stored = json.loads(db.execute("SELECT json FROM jobs WHERE id = ?", (job["jobId"],)).fetchone()[0])
    assert stored["status"] == "failure" and stored["metadata"]["error"] == INTERRUPTED
    kept = stored["metadata"]["assetIds"]
    assert kept[:len(finished)] == finished and len(kept) < 16  # what it finished, and not the rest
    assert all((data / "files" / f"{asset_id}.png").is_file() for asset_id in kept)
    print(f"shutdown with a studio tab open and PatchMatch running: {stopped_after:.1f} s")


def test_a_second_server_refuses_a_data_folder_in_use_and_leaves_its_jobs_alone(tmp_path, models_dir):
    data = tmp_path / "data"
    first, url = start_app(data, models_dir, tmp_path / "first.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            job = http.post("/generate/inpaint", json=body(modelId="tiny-sd-1_5", numInferenceSteps=60, numSamples=2,
                                                           width=128, height=128)).json()["job"]
            second = subprocess.run([sys.executable, "app.py"], cwd=REPO, capture_output=True, text=True, timeout=120,
                                    env=server_env(data, models_dir, PORT=str(free_port())))
            assert second.returncode != 0
            assert "another inpaint server" in second.stderr and str(data.resolve()) in second.stderr
            assert "Traceback" not in second.stderr
            deadline = time.monotonic() + 120
            while (done := http.get(f"/jobs/{job['jobId']}").json()["job"])["status"] not in FINAL:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert done["status"] == "success" and len(done["metadata"]["assetIds"]) == 2
    finally:
        stop_server(first)
    # Once the first has stopped, the folder is free again (the lock dies with its holder, even on SIGKILL).
    again, _ = start_app(data, models_dir, tmp_path / "again.log")
    stop_server(again, signal.SIGKILL)
    third, _ = start_app(data, models_dir, tmp_path / "third.log")
    stop_server(third)


# ---- retention: deleting needs the key, and what is in use stays --------------------------------------------

def test_delete_routes_need_the_key_and_keep_what_is_in_use(engine):
    good = {"Authorization": f"Bearer {KEY}"}
    with TestClient(create_app(engine, api_key=KEY, with_ui=False)) as client:
        upload = client.post("/assets", json={"image": data_url(photo(128, 96))}, headers=good).json()["asset"]
        job = client.post("/generate/inpaint", json=body(image=None, numSamples=1) | {"image": upload["id"]},
                          headers=good).json()["job"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/jobs/{job['jobId']}", headers=good).json()["job"])["status"] not in FINAL:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        result = job["metadata"]["assetIds"][0]
        for path in (f"/assets/{upload['id']}", f"/jobs/{job['jobId']}"):
            assert_error(client.delete(path), 401, "authorization")
        assert_error(client.delete(f"/assets/{upload['id']}", headers=good), 409, "assetId", job["jobId"])
        deleted = client.delete(f"/jobs/{job['jobId']}", headers=good).json()
        assert set(deleted["deletedAssetIds"]) == {upload["id"], result, job["metadata"]["input"]["maskId"]}
        for asset_id in deleted["deletedAssetIds"]:
            assert client.get(f"/assets/{asset_id}", headers=good).status_code == 404
        assert client.get(f"/jobs/{job['jobId']}", headers=good).status_code == 404
        assert list((engine.store.root / "files").iterdir()) == []


# ---- memory: many huge requests at once -------------------------------------------------------------------

HUGE_SIDE = (7744, 5160)  # 39.96 MP: just inside the 40 MP limit


def huge_pictures() -> tuple[Image.Image, Image.Image]:
    """A 40 MP photo-like picture and its 40 MP mask (a few MB encoded: gradients compress well)."""
    width, height = HUGE_SIDE
    x_np = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y_np = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    image = Image.fromarray(np.broadcast_to(x_np // 2 + y_np // 2, (height, width, 3)).copy(), "RGB")
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (100, 100, 300, 300))
    return image, mask


def huge_request() -> dict:
    image, mask = huge_pictures()
    return body(image=None) | {"image": data_url(image, "JPEG"), "mask": data_url(mask), "numSamples": 1}


class PeakMemory:
    """The highest RSS of a process while the `with` block runs, sampled every 20 ms."""

    def __init__(self, pid: int):
        self.process, self.peak, self._done = psutil.Process(pid), 0, threading.Event()
        self.baseline = self.process.memory_info().rss

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(5)


def test_thirty_two_concurrent_40_megapixel_requests_stay_within_memory(tmp_path, models_dir):
    data = tmp_path / "data"
    proc, url = start_app(data, models_dir, tmp_path / "server.log")
    payload = json.dumps(huge_request()).encode()
    answers: list[httpx.Response] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            answers.append(http.post("/generate/inpaint", content=payload,
                                     headers={"Content-Type": "application/json"}))

    try:
        with PeakMemory(proc.pid) as memory:
            clients = [threading.Thread(target=client) for _ in range(32)]
            started = time.monotonic()
            for thread in clients:
                thread.start()
            for thread in clients:
                thread.join(600)
            elapsed = time.monotonic() - started
        statuses = sorted(answer.status_code for answer in answers)
        assert len(answers) == 32 and set(statuses) <= {200, 429, 503}, statuses
        assert statuses.count(200) >= 1
        for answer in answers:
            if answer.status_code != 200:  # refused cleanly: the error shape, and when to come back
                assert answer.json()["error"]["field"] in ("server", "job") and answer.headers["retry-after"]
        assert memory.peak < 4 * 2**30, f"peak RSS {memory.peak / 2**30:.2f} GB"
        print(f"32 concurrent 40 MP requests: {statuses.count(200)} accepted, {statuses.count(503)} x 503, "
              f"{statuses.count(429)} x 429 in {elapsed:.1f} s; server RSS {memory.baseline / 2**20:.0f} MB before, "
              f"peak {memory.peak / 2**20:.0f} MB")
    finally:
        stop_server(proc)


def test_twelve_concurrent_previews_of_a_40_megapixel_picture_stay_within_memory(tmp_path, models_dir):
    """The studio's private preview event decodes in the same pixel budget as REST: concurrent previews of a
    40 MP picture and mask take their turn or are told the server is busy, instead of all decoding at once."""
    proc, url = start_app(tmp_path / "data", models_dir, tmp_path / "server.log")
    image, mask = huge_pictures()
    try:
        with httpx.Client(base_url=url, timeout=300) as http:
            config = http.get("/config").json()
            show_mask = next(d for d in config["dependencies"] if d.get("api_name") == "show_mask")
            ids = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
            uploaded = {}
            for name, picture, fmt in (("picture", image, "JPEG"), ("mask", mask, "PNG")):
                data = imageops.decode_data_url(data_url(picture, fmt), field=name)
                sent = http.post("/gradio_api/upload", files={"files": (f"{name}.{fmt.lower()}", data)})
                uploaded[name] = file_data(sent.json()[0])
            given = {"inpaint-picture": uploaded["picture"], "inpaint-mask-upload": uploaded["mask"],
                     "inpaint-painter": "", "inpaint-grow": 0, "inpaint-feather": 0, "inpaint-model": "opencv-telea"}
            inputs = [given.get(ids.get(i), None) for i in show_mask["inputs"]]
            reasons = []

            def preview() -> None:
                session = uuid.uuid4().hex
                joined = http.post("/gradio_api/queue/join", json={"data": inputs, "fn_index": show_mask["id"],
                                                                   "session_hash": session, "event_data": None})
                assert joined.is_success, joined.text
                reasons.append(outcome(http, "/gradio_api/queue/data", session_hash=session))

            with PeakMemory(proc.pid) as memory:
                callers = [threading.Thread(target=preview) for _ in range(12)]
                for thread in callers:
                    thread.start()
                for thread in callers:
                    thread.join(600)
        assert len(reasons) == 12 and all(succeeded for succeeded, _ in reasons)
        drawn = sum("mask-" in said for _, said in reasons)
        busy = sum("busy decoding other large images" in said for _, said in reasons)
        assert drawn >= 1 and drawn + busy == 12, [said[-600:] for _, said in reasons]
        rise = memory.peak - memory.baseline
        assert rise < 3 * 2**30, f"RSS rose {rise / 2**30:.2f} GB above idle"
        print(f"12 concurrent 40 MP previews: {drawn} drawn, {busy} told busy; RSS {memory.baseline / 2**20:.0f} MB "
              f"before, peak {memory.peak / 2**20:.0f} MB")
    finally:
        stop_server(proc)


def test_decoding_waits_for_room_in_the_pixel_budget_then_refuses_with_retry_after(client, engine):
    upload = {"image": data_url(photo(128, 96))}
    with engine.decoding.hold(engine.decoding.capacity):  # other requests are decoding all it allows
        for path, payload in (("/assets", upload), ("/generate/inpaint", body())):
            busy = client.post(path, json=payload)  # answered once its wait is over: a bounded wait, not a hang
            assert_error(busy, 503, "server", "busy")
            assert busy.headers["retry-after"] == "2"
        assert engine.store.list(include_hidden=True) == []  # refused before anything was stored
    assert client.post("/assets", json=upload).status_code == 200  # room again
