"""Attacks from outside, against a real server started as `python app.py` starts it: files of the server named
as Gradio file inputs."""

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.images import data_url, photo
from tests.test_hardening import loopback_socket, server_env, start_server, stop_server

KEY = "s3cret-key-for-the-attack-tests"
SECRET_ENV = "INPAINT_TEST_SECRET"  # a marker in the server's environment: /proc/self/environ must not leak it
SECRET = "environ-marker-" + uuid.uuid4().hex
# Component types whose values Gradio moves into its cache (a FileData anywhere in their payload).
FILE_COMPONENTS = {"image", "imageeditor", "gallery", "imageslider", "file", "uploadbutton", "video", "audio",
                   "model3d", "downloadbutton"}


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def hostile_value(component_type: str, path: str):
    """A value of `component_type` whose every file is `path` on the server."""
    named = file_data(path)
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


def attack_every_endpoint(http: httpx.Client, target: str) -> dict[str, tuple[bool, str]]:
    """Every event of the studio that takes a file, private ones included, and the public API by name, called
    with `target` in each file input: by endpoint, whether it succeeded and what it said."""
    config = http.get("/config").json()
    types = {component["id"]: component["type"] for component in config["components"]}
    outcomes = {}
    for dependency in config["dependencies"]:
        inputs = [types.get(i) for i in dependency["inputs"]]
        if not dependency.get("backend_fn") or not FILE_COMPONENTS & set(inputs):
            continue
        data = [hostile_value(kind, target) if kind in FILE_COMPONENTS else None for kind in inputs]
        session = uuid.uuid4().hex
        joined = http.post("/gradio_api/queue/join", json={"data": data, "fn_index": dependency["id"],
                                                           "session_hash": session, "event_data": None})
        label = f"fn {dependency['id']} ({dependency.get('api_name')})"
        outcomes[label] = (outcome(http, "/gradio_api/queue/data", session_hash=session) if joined.is_success
                           else (False, joined.text))
    for name, endpoint in http.get("/gradio_api/info").json()["named_endpoints"].items():
        kinds = [p["component"].lower().replace(" ", "") for p in endpoint["parameters"]]
        data = [hostile_value(kind, target) if kind in FILE_COMPONENTS else None for kind in kinds]
        started = http.post(f"/gradio_api/call{name}", json={"data": data})
        outcomes[f"api {name}"] = (outcome(http, f"/gradio_api/call{name}/{started.json()['event_id']}")
                                   if started.is_success else (False, started.text))
    assert len(outcomes) >= 4, f"too few file-taking endpoints found to attack: {sorted(outcomes)}"
    return outcomes


@pytest.mark.parametrize("keyed", [False, True], ids=["keyless", "keyed"])
def test_no_file_of_the_server_can_be_read_through_the_studios_file_inputs(tmp_path, models_dir, keyed):
    data, gradio_cache = tmp_path / "data", tmp_path / "gradio-cache"
    settings = {"INPAINT_API_KEY": KEY} if keyed else {}
    env = {**server_env(data, models_dir, **settings), SECRET_ENV: SECRET, "GRADIO_TEMP_DIR": str(gradio_cache)}
    headers = {"Authorization": f"Bearer {KEY}"} if keyed else None
    with loopback_socket() as (sock, url):
        proc = start_server(sock, url, env, tmp_path / "server.log", ui=True, headers=headers)
        try:
            with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
                if keyed:  # a logged-in visitor of the studio must not read the server's files either
                    assert http.post("/login", data={"username": "me", "password": KEY}).status_code == 200
                hidden = photo(96, 96, seed=7)
                asset = http.post("/assets", json={"image": data_url(hidden), "hide": True}).json()["asset"]
                targets = {
                    "/etc/passwd": Path("/etc/passwd").read_bytes()[:64],
                    "/proc/self/environ": SECRET.encode(),
                    str(data / "inpaint.db"): b"SQLite format 3",
                    str(data / "files" / f"{asset['id']}.png"): (data / "files" / f"{asset['id']}.png").read_bytes(),
                }
                for target, secret in targets.items():
                    outcomes = attack_every_endpoint(http, target)
                    for label, (succeeded, said) in outcomes.items():
                        # Refused before the handler ran: the file was not one Gradio received as an upload.
                        assert not succeeded, (target, label, said[-1500:])
                        assert "not uploaded by a user" in said, (target, label, said[-1500:])
                        assert secret.decode("latin-1")[:40] not in said
                    # Nothing was copied where /gradio_api/file= serves from, and the path itself is refused.
                    leaked = [p for p in gradio_cache.rglob("*") if p.is_file() and secret in p.read_bytes()]
                    assert leaked == [], (target, leaked)
                    assert http.get(f"/gradio_api/file={target}").status_code in (403, 404)
        finally:
            stop_server(proc)
