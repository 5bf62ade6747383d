"""The one error type of the domain: a request the contract rejects, naming field and rule."""


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


class JobCanceled(Exception):
    """Raised inside a generation when its cancel token is set; never reaches a client as an error."""
