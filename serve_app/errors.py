"""The one error type the service raises for anything a client did or must know about.

It crosses Ray process boundaries (a model deployment raises it, the router answers with it), so it
carries plain data only. The router renders it as `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations


class ServiceError(Exception):
    status: int = 400
    type: str = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def __reduce__(self):  # keep the fields when Ray pickles the exception
        return (_rebuild, (self.__class__, self.message, self.status, self.type, self.param, self.code, self.headers))

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _rebuild(cls, message, status, type_, param, code, headers):
    return cls(message, status=status, type=type_, param=param, code=code, headers=headers)


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> ServiceError:
    return ServiceError(message, status=400, param=param, code=code)


def unknown_model(name: str, available: list[str]) -> ServiceError:
    return ServiceError(
        f"The model '{name}' does not exist. Available models: {', '.join(sorted(available))}.",
        status=404,
        param="model",
        code="model_not_found",
    )


def too_large(message: str, param: str | None = None) -> ServiceError:
    return ServiceError(message, status=413, param=param, code="payload_too_large")


def overloaded(message: str, retry_after_s: int = 1) -> ServiceError:
    return ServiceError(
        message, status=503, type="server_overloaded", code="overloaded", headers={"Retry-After": str(retry_after_s)}
    )
