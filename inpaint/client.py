"""Requests sent to a running server over the REST API (`--server URL [--key KEY]`): a job per request,
followed by long-poll, its result files downloaded. The server's workers (devices, a Ray cluster) do the work."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import imageops
from .errors import RequestError
from .jobs import FINAL_STATES, LONG_POLL_MAX_S
from .runs import Outcome, Target

BUSY_RETRIES = 20  # a full queue (429) or decoding budget (503) is waited out this many times, per request


class Remote:
    """A server's REST API as a runner of batch and grid requests; safe to use from several threads."""

    def __init__(self, url: str, key: str | None = None):
        self.url = url.rstrip("/")
        self.key = key
        self._models: set[str] | None = None
        self._running: set[str] = set()  # job ids, of the requests of every thread
        self._lock = threading.Lock()

    def model_ids(self) -> set[str]:
        # Also the first call of a run: an unreachable server or a wrong key is said before anything runs.
        if self._models is None:
            self._models = {model["id"] for model in self._call("GET", "/models")["models"]}
        return self._models

    def upload(self, data_url: str) -> str:
        return self._call("POST", "/assets", {"image": data_url})["asset"]["id"]

    def run(self, body: dict, target: Target, *, image: bytes | None = None, mask: bytes | None = None) -> Outcome:
        start = time.perf_counter()
        # The wire's format: files travel as data URLs in the JSON body.
        body = body | {field: imageops.bytes_data_url(data) for field, data in (("image", image), ("mask", mask))
                       if data is not None}
        try:
            # Answered at once, not once the job ended: until then the job could not be canceled.
            job = self._call("POST", "/generate/inpaint", body)["job"]
            with self._lock:
                self._running.add(job["jobId"])
            try:
                while job["status"] not in FINAL_STATES:
                    job = self._call("GET", f"/jobs/{job['jobId']}?wait={LONG_POLL_MAX_S}")["job"]
            finally:
                with self._lock:
                    self._running.discard(job["jobId"])
        except RequestError as exc:
            if exc.field.startswith("--"):  # the server or the key, not this request: the run stops
                raise
            return Outcome.refused(exc, time.perf_counter() - start)
        files = []
        for asset_id, seed in zip(job["metadata"]["assetIds"], job["metadata"]["seeds"]):
            path = target(seed)
            self._download(f"/assets/{asset_id}/file?original=true", path)
            files.append(path.name)
        return Outcome.of_job(job, files, time.perf_counter() - start)

    def cancel(self) -> None:
        with self._lock:
            running = list(self._running)
        for job_id in running:
            try:
                self._call("POST", f"/jobs/{job_id}/cancel")
            except RequestError:  # ended meanwhile, or the server is gone: nothing left to stop
                pass

    def _download(self, path: str, target: Path) -> None:
        with self._open("GET", path) as answer, target.open("wb") as file:
            while chunk := answer.read(1 << 20):
                file.write(chunk)

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        with self._open(method, path, body) as answer:
            return json.load(answer)

    def _open(self, method: str, path: str, body: dict | None = None):
        """The server's answer; a 4xx body becomes the RequestError it words (a wrong key too), a server that
        cannot be reached or answers 5xx one naming --server."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for _ in range(BUSY_RETRIES):
            request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
            try:
                # Past the long-poll: a poll answers within LONG_POLL_MAX_S.
                return urllib.request.urlopen(request, timeout=LONG_POLL_MAX_S + 30)
            except urllib.error.HTTPError as exc:
                if exc.code in (429, 503) and exc.headers.get("Retry-After", "").isdigit():
                    time.sleep(int(exc.headers["Retry-After"]))
                    continue
                raise _error(exc) from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise RequestError("--server", f"cannot reach {self.url}: {reason}") from None
        raise RequestError("--server", f"{self.url} stayed busy: {BUSY_RETRIES} tries of {method} {path}")


def _error(exc: urllib.error.HTTPError) -> RequestError:
    try:
        detail = json.load(exc)["error"]
        field, message = detail["field"], detail["message"]
    except (ValueError, KeyError, TypeError):
        field, message = "--server", f"answered {exc.code} {exc.reason}"
    if exc.code == 401:
        field, message = "--key", f"the server refused it ({message})"
    elif exc.code >= 500:
        field = "--server"
    return RequestError(field, message, status=exc.code)
