"""Many requests from the command line (folder batches, grids of settings): one request's outcome, running it in
this process, the results file that makes a run resumable, and the progress bar."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Protocol, TypeVar

from . import imageops
from .errors import RequestError
from .schema import parse_request

RESULTS_FILE = "results.jsonl"
Target = Callable[[int], Path]  # where the result of a seed is written
T = TypeVar("T")


@dataclasses.dataclass
class Outcome:
    """What one request gave: a line of results.jsonl (with what names its input or cell)."""

    status: str  # "success", "failure" (a refused request too) or "canceled"
    seconds: float
    files: list[str] = dataclasses.field(default_factory=list)  # in the output folder, one per seed
    seeds: list[int] = dataclasses.field(default_factory=list)
    seam_reports: list[dict | None] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    input: dict | None = None  # the request with every default resolved, as the job's metadata.input
    error: str | None = None  # as the API words it: "field: rule" for a refused request
    field: str | None = None  # the field at fault, for a refused request

    @classmethod
    def refused(cls, exc: RequestError, seconds: float) -> Outcome:
        return cls("failure", seconds, error=f"{exc.field}: {exc.message}", field=exc.field)

    @classmethod
    def of_job(cls, job: dict, files: list[str], seconds: float) -> Outcome:
        """From a job as the API answers it (inpaint.responses.JobRecord)."""
        meta = job["metadata"]
        return cls(job["status"], seconds, files, list(meta["seeds"]), list(meta.get("seamReports", [])),
                   list(meta["warnings"]), meta["input"], meta["error"])

    def to_json(self) -> dict:
        return {"status": self.status, "seconds": round(self.seconds, 3), "files": self.files, "seeds": self.seeds,
                "seamReports": self.seam_reports, "warnings": self.warnings, "input": self.input,
                "error": self.error, "field": self.field}


class Runner(Protocol):
    """Where requests run: this process (Local) or a server (inpaint.client.Remote)."""

    def model_ids(self) -> set[str]: ...

    def upload(self, data_url: str) -> str:
        """Stores an image once for many requests; its asset id."""

    def run(self, body: dict, target: Target, *, image: bytes | None = None, mask: bytes | None = None) -> Outcome:
        """Runs one request to its end, writing each result to `target(seed)`; `image` and `mask`, when given,
        are its files as read (in place of the body's). A refused request is an Outcome, not an error."""

    def cancel(self) -> None:
        """Cancels the requests running on other threads."""


class Local:
    """Requests run by this process's engine, as `python -m inpaint generate` runs one. With `keep` the engine's
    store keeps each job and its results (see run_into)."""

    def __init__(self, engine, *, keep: bool = True):
        self.engine = engine
        self.keep = keep

    def model_ids(self) -> set[str]:
        return {entry.id for entry in self.engine.catalog.entries()}

    def upload(self, data_url: str) -> str:
        return self.engine.upload(imageops.decode_data_url(data_url, field="image")).id

    def cancel(self) -> None:
        pass  # one request at a time, on the caller's thread: an interrupt there closes its stream

    def run(self, body: dict, target: Target, *, image: bytes | None = None, mask: bytes | None = None) -> Outcome:
        from .jobs import Job, record

        start = time.perf_counter()
        try:
            request = self.engine.prepare(body, image=image, mask=mask)  # the files as read: nothing encoded
        except RequestError as exc:
            return Outcome.refused(exc, time.perf_counter() - start)
        job = Job(request)
        files = run_into(self.engine, job, lambda asset_id, seed: target(seed), keep=self.keep)
        return Outcome.of_job(record(job), [path.name for path in files], time.perf_counter() - start)


def run_into(engine, job, target: Callable[[str, int], Path], *, keep: bool = True) -> list[Path]:
    """Runs a job of a prepared request on `engine`, each result placed at `target(asset_id, seed)` as soon as it
    is made: an interrupted run keeps what it made. With `keep` the job is saved in the engine's store, as the
    server saves its jobs, and each result copied out of it; without, the store is scratch and each result's
    file moves out of it: a rename where the scratch store is on the target's disk, so it is written once.
    The files, in seed order."""
    from .jobs import record, run_job

    files: list[Path] = []
    place = shutil.copyfile if keep else shutil.move

    def place_results(job, durable: bool) -> None:
        for asset_id, seed in list(zip(job.asset_ids, job.seeds))[len(files):]:
            files.append(target(asset_id, seed))
            place(engine.store.file_path(asset_id, original=True), files[-1])
        if durable and keep:
            engine.store.save_job(record(job))

    run_job(engine, job, on_change=place_results)
    return files


def check_base(body: object, runner: Runner, *, inputs_given: bool) -> dict:
    """The base request of a run, checked before anything runs: its fields and types by the schema, its model
    by the catalog where it runs. With `inputs_given` the run sets the image and mask itself."""
    if not isinstance(body, dict):
        parse_request(body)  # raises, naming the body
    if inputs_given:
        for field in ("image", "imageId", "mask", "maskId"):
            if field in body:
                raise RequestError(field, "is set by --images and --masks for each picture; leave it out of "
                                          "the request")
        # Any string passes the schema here: the pictures are checked one by one as they run.
        parse_request({**body, "image": "picture", "mask": "data:"})
    else:
        parse_request(body)
    check_model(body.get("modelId"), runner, field="modelId")
    return body


def check_model(model_id: object, runner: Runner, *, field: str) -> None:
    known = runner.model_ids()
    if isinstance(model_id, str) and model_id not in known:
        raise RequestError(field, f"unknown model {model_id!r}; valid ids: {', '.join(sorted(known))}")


class Results:
    """results.jsonl in the output folder: one line per input (or cell), written as each ends, so an
    interrupted run keeps what it did. A new run keeps the lines of the keys it skips and rewrites the others.
    Each line carries a digest of the request every line shares: a key done with another one is run again."""

    def __init__(self, folder: Path, key: Callable[[dict], str], request: dict):
        self.path = folder / RESULTS_FILE
        self.key = key
        self.digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]
        self.lines: dict[str, dict] = {}
        if self.path.exists():
            for text in self.path.read_text().splitlines():
                try:
                    line = json.loads(text)
                except json.JSONDecodeError:  # the last line of a run killed while writing it
                    continue
                self.lines[key(line)] = line

    def done(self, key: str) -> bool:
        """Whether `key` succeeded in an earlier run with this request, and its files are all still there."""
        line = self.lines.get(key)
        return (line is not None and line.get("status") == "success" and line.get("requestDigest") == self.digest
                and all((self.path.parent / name).is_file() for name in line.get("files", [])))

    def start(self, keys: Iterable[str], *, force: bool, unit: str) -> set[str]:
        """The keys to run (says how many are skipped); the file keeps only the lines of the others (of this
        run's keys, done before)."""
        keys = list(keys)
        kept = {key: self.lines[key] for key in keys if not force and self.done(key)}
        changed = sum(self.lines.get(key, {}).get("requestDigest") not in (None, self.digest) for key in keys)
        self.lines = kept
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(json.dumps(line) + "\n" for line in kept.values()))
        os.replace(temporary, self.path)
        if kept:
            say(f"{len(kept)} of {len(keys)} {unit}s were done by an earlier run into {self.path.parent}: skipped "
                "(--force runs them again)")
        if changed and not force:
            say(f"{changed} {unit}s were done with another request: run again")
        return {key for key in keys if key not in kept}

    def add(self, line: dict) -> None:
        line = {**line, "requestDigest": self.digest}
        self.lines[self.key(line)] = line
        with self.path.open("a") as file:
            file.write(json.dumps(line) + "\n")


def run_each(work: Callable[[T], dict], items: list[T], results: Results, *, unit: str, runner: Runner,
             parallel: int = 1) -> None:
    """`work(item)` (one request) for each item, up to `parallel` at once, each line added to `results` as it
    ends, under a progress bar on stderr (done / total, rate, time left); failures are said as they come. When
    interrupted, the requests running are canceled."""
    from tqdm import tqdm  # imported by the runs that draw a bar, not by `generate`

    with tqdm(total=len(items), unit=unit, file=sys.stderr, dynamic_ncols=True,
              disable=None) as bar:  # None: no bar where stderr is not a terminal (a log file fills with redraws)
        def finished(line: dict) -> None:
            if line["status"] != "success":
                say(f"{results.key(line)}: {line['status']}: {line['error']}")
            results.add(line)
            bar.update()

        if parallel == 1:
            for item in items:
                finished(work(item))
            return
        with ThreadPoolExecutor(parallel, thread_name_prefix="inpaint-requests") as pool:
            futures = [pool.submit(work, item) for item in items]
            try:
                for future in as_completed(futures):
                    finished(future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                runner.cancel()  # the threads still waiting on a request return once it ends
                raise


def say(message: str) -> None:
    """A line on stderr that the bar redraws under."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
