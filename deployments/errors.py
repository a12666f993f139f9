"""What can go wrong, said in the service's own words: no HTTP here.

A model deployment raises these; they cross Ray process boundaries (pickled with their fields) and the
HTTP face (serve_app/ingress/errors.py) alone turns each class into a status code and the JSON envelope.
Each error names the request field at fault (`param`, e.g. "input[3]") and a stable machine `code`.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: a failure the client must hear about, with plain data only."""

    default_code = "invalid_value"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # keep the fields when Ray pickles the exception
        return (_rebuild, (type(self), self.message, self.param, self.code, self.retry_after_s))


def _rebuild(cls, message, param, code, retry_after_s):
    return cls(message, param=param, code=code, retry_after_s=retry_after_s)


class InvalidRequest(ServiceError):
    """The request cannot be served as asked (bad value, unsupported option, input too long for the model)."""


class TooLarge(ServiceError):
    """The request is over a configured size limit (inputs, characters, documents, body)."""

    default_code = "payload_too_large"


class NotFound(ServiceError):
    """No such model (here, or at a remote backend)."""

    default_code = "model_not_found"


class Unavailable(ServiceError):
    """Try again shortly: queue full, replica failed or starting, remote backend down. Carries a retry hint."""

    default_code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int | None = 1, **kwargs) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **kwargs)


class DeadlineExceeded(ServiceError):
    """The request ran past its deadline (ours, or a remote backend's answer time)."""

    default_code = "timeout"


class Cancelled(ServiceError):
    """The caller went away before the answer."""

    default_code = "cancelled"


class UpstreamFailed(ServiceError):
    """A remote backend answered with an error or nonsense."""

    default_code = "remote_error"


class InferenceFailed(ServiceError):
    """The model itself failed on this input (never the client's fault)."""

    default_code = "inference_failed"
