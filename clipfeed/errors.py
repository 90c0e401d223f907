"""Domain errors. Services raise these; one handler turns them into {"error": {...}} responses."""

from __future__ import annotations


class ClipfeedError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, field: str | None = None,
                 commit: bool = False):
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}
        self.field = field
        # Keep the transaction's writes although the request fails (e.g. a failed-login record).
        self.commit = commit

    def to_body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


class ValidationFailed(ClipfeedError):
    status = 422
    code = "validation_error"


class Unauthorized(ClipfeedError):
    status = 401
    code = "unauthorized"


class Forbidden(ClipfeedError):
    status = 403
    code = "forbidden"


class NotFound(ClipfeedError):
    status = 404
    code = "not_found"


class Conflict(ClipfeedError):
    status = 409
    code = "conflict"


class TooLarge(ClipfeedError):
    status = 413
    code = "too_large"


class RateLimited(ClipfeedError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after)))})
        self.retry_after = retry_after
