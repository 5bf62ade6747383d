"""The errors of the domain, and the one translation of pydantic's validation errors into them.

Domain code raises these; the edges change their type once: the API into an HTTP 4xx/5xx body, the studio into
a `gr.Error`, the CLI into a line on stderr and exit status 2 (a refused request) or 1."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Where FastAPI locates a validation error before the field's own path.
_REQUEST_PARTS = ("body", "query", "path", "header")


class RequestError(ValueError):
    """Bad client input. `field` is the camelCase request field (or path part) at fault.

    Raised by domain code only; the edges turn it into an HTTP 4xx body, a `gr.Error`
    or CLI exit status 2. `status` lets "not found" be told apart from "invalid".
    """

    def __init__(self, field: str, message: str, *, status: int = 400):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status

    def to_json(self) -> dict:
        return {"error": {"field": self.field, "message": self.message, "status": self.status}}


class NotFoundError(RequestError):
    def __init__(self, field: str, message: str):
        super().__init__(field, message, status=404)


class Busy(RequestError):
    """The server is decoding as much as it may at once; the client should retry shortly (503)."""

    def __init__(self, pixels: int, capacity: int, retry_after_s: int):
        super().__init__("server", f"the server is busy decoding other large images ({pixels / 1e6:.0f} MP asked, "
                                   f"{capacity / 1e6:.0f} MP at once); retry in {retry_after_s} s", status=503)


class QueueFull(RequestError):
    def __init__(self, size: int):
        super().__init__("job", f"the queue is full ({size} jobs waiting); retry later", status=429)


class JobCanceled(Exception):
    """Raised inside a generation when its cancel token is set; never reaches a client as an error."""


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message says what it needs."""

    def __init__(self, model_id: str, message: str):
        super().__init__(f"model {model_id!r} is unavailable: {message}")
        self.model_id = model_id


class DataFolderBusy(RuntimeError):
    """Another process holds the data folder: its jobs must not be marked failed by this one."""


def validation_error(errors: Sequence[Mapping], what: str = "this request") -> RequestError:
    """The first of pydantic's (or FastAPI's) validation errors as a RequestError naming the field at fault, dotted
    for a nested one, and the rule. `what` names the request in the message about a field it does not have."""
    first = errors[0]
    where = [str(part) for part in first.get("loc", ())]
    if where and where[0] in _REQUEST_PARTS:
        where = where[1:]
    kind = first.get("type")
    message = str(first.get("msg", "is invalid")).removeprefix("Value error, ")
    if kind == "json_invalid":  # FastAPI locates it at a character offset, not a field
        where, message = [], f"is not valid JSON ({first.get('ctx', {}).get('error', message)})"
    elif not where and kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "the request body must be a JSON object"
    elif kind == "extra_forbidden":
        message = f"is not a field of {what}"
    elif kind not in ("missing", "value_error") and "input" in first:  # a value error's message quotes the value
        shown = repr(first["input"])
        message = f"{message} (got {shown[:80] + '...' if len(shown) > 80 else shown})"
    return RequestError(".".join(where) or "body", message)
