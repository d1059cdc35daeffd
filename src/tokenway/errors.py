"""The error tree of tokenway.

    TokenwayError                 anything that ends a request with an error status
    ├── ClientError               the client's request is wrong (never retried, never a 5xx)
    │   ├── BadRequest            400 malformed JSON, wrong types, missing fields
    │   │   └── Unsupported       400 valid, but only an upstream of the same protocol can take it
    │   ├── AuthenticationError   401 missing or unknown key
    │   ├── PermissionDenied      403 key may not use this model or endpoint
    │   ├── NotFound              404 unknown model or path
    │   ├── PayloadTooLarge       413 body over the configured limit
    │   └── RateLimited           429 the client's own key is over its limits
    └── UpstreamError             one upstream attempt failed
        ├── UpstreamConnectError  locally originated: refused, reset, DNS  (retryable)
        ├── UpstreamTimeout       locally originated: no answer in time    (retryable)
        ├── TargetUnsuitable      this target cannot take the request; nothing was sent
        ├── UpstreamStreamCut     the stream broke after bytes went out    (not retryable)
        ├── NoCapacity            nothing could be sent: breakers open, no headroom, retry
                                  budget or deadline spent (503; 429 if only rate limits)
        └── UpstreamStatus        the provider answered with an error status;
                                  retryable for 408, 409, 429 and 5xx, not for other 4xx
    AllTargetsFailed              every target of a model failed; carries errors by target

Each class knows the client status it maps to, its error type in the client API, whether
another attempt may help, and a short reason flag for the ledger row.
"""

from __future__ import annotations


class TokenwayError(Exception):
    """Base of every error that ends a request. `status` is what the client gets."""

    status: int = 500
    error_type: str = "api_error"
    flag: str = "ERR"
    retryable: bool = False

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class ClientError(TokenwayError):
    status = 400
    error_type = "invalid_request_error"
    flag = "BADREQ"


class BadRequest(ClientError):
    pass


class Unsupported(BadRequest):
    """Valid in the client's API but beyond what tokenway can translate: such a request can
    still pass through to an upstream of the client's own protocol."""


class AuthenticationError(ClientError):
    status = 401
    error_type = "authentication_error"
    flag = "AUTH"


class PermissionDenied(ClientError):
    status = 403
    error_type = "permission_error"
    flag = "DENIED"


class NotFound(ClientError):
    status = 404
    error_type = "not_found_error"
    flag = "NOTFOUND"


class PayloadTooLarge(ClientError):
    status = 413
    error_type = "request_too_large"
    flag = "TOOLARGE"


class RateLimited(ClientError):
    status = 429
    error_type = "rate_limit_error"
    flag = "RL"

    def __init__(self, message: str, *, retry_after_s: float | None = None):
        super().__init__(message, code="rate_limit_exceeded")
        self.retry_after_s = retry_after_s


class BudgetExceeded(ClientError):
    """A key's spend plus what is in flight would pass its budget; retrying will not help."""

    status = 429
    error_type = "insufficient_quota"
    flag = "BUDGET"

    def __init__(self, message: str):
        super().__init__(message, code="insufficient_quota")


class UpstreamError(TokenwayError):
    """One upstream attempt failed. `status` is the client status if it is the last word."""

    status = 502
    error_type = "api_error"
    flag = "UF"
    retryable = True


class UpstreamConnectError(UpstreamError):
    flag = "UF"


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "timeout_error"
    flag = "UT"


class UpstreamStreamCut(UpstreamError):
    flag = "UC"
    retryable = False


class TargetUnsuitable(UpstreamError):
    """This target cannot take the request (say, it cannot be translated to its protocol);
    another target may. Nothing was sent."""

    status = 400
    error_type = "invalid_request_error"
    flag = "NOTRANS"


_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


class UpstreamStatus(UpstreamError):
    """The provider answered with an error status; `body` is its (already redacted) error text."""

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        retry_after_s: float | None = None,
        error_type: str | None = None,
    ):
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retry_after_s = retry_after_s
        self.retryable = upstream_status in _RETRYABLE_STATUSES or upstream_status >= 500
        if upstream_status == 429:
            self.status, self.error_type, self.flag = 429, "rate_limit_error", "URL"
        elif upstream_status >= 500:
            self.status, self.error_type, self.flag = 502, "api_error", "U5XX"
        elif upstream_status in (401, 403):
            # The provider refused our credentials: the client's own key was fine.
            self.status, self.error_type, self.flag = 502, "api_error", "UAUTH"
        else:
            self.status = upstream_status
            self.error_type = error_type or "invalid_request_error"
            self.flag = "U4XX"


class NoCapacity(UpstreamError):
    """No attempt could be (re)sent: breakers open, no headroom, the retry budget or the
    deadline spent. 503, or 429 when the only obstacle is providers' rate limits."""

    status = 503
    error_type = "api_error"

    def __init__(
        self, message: str, *, flag: str = "UH", retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.flag = flag
        self.retry_after_s = retry_after_s
        if flag == "URL":
            self.status, self.error_type = 429, "rate_limit_error"


# Failures on the providers' side: when every target ended in one, the service is unavailable.
_UNAVAILABLE = frozenset({"UF", "UT", "U5XX", "UH", "URX", "DL", "UAUTH"})


class AllTargetsFailed(TokenwayError):
    """Every target tried for a request failed. The last error decides the client status,
    except that a request every target failed on its own side (down, timing out, 5xx, no
    capacity left) is a 503 Service Unavailable."""

    def __init__(self, errors: list[tuple[str, UpstreamError]]):
        last = errors[-1][1] if errors else NoCapacity("no target available")
        labels = ", ".join(dict.fromkeys(label for label, _ in errors))
        super().__init__(last.message if len(errors) < 2 else f"{last.message} (tried {labels})")
        self.errors = errors
        self.status = last.status
        self.error_type = last.error_type
        self.flag = last.flag
        self.retry_after_s = getattr(last, "retry_after_s", None)
        if errors and all(e.flag in _UNAVAILABLE for _, e in errors):
            self.status, self.error_type = 503, "api_error"
            waits = [w for _, e in errors if (w := getattr(e, "retry_after_s", None))]
            self.retry_after_s = min(waits) if waits else 1.0
