"""The exceptions aiotongyi raises.

Every failure of a call derives from :class:`TongyiError`::

    TongyiError
    ├── APIError                 status_code, code, message (service said no)
    │   ├── BadRequestError        400 (InvalidParameter, DataInspectionFailed, ...)
    │   ├── AuthenticationError    401/403, and a missing key (raised before any request)
    │   ├── NotFoundError          404 (model not found)
    │   ├── RateLimitError         429 (Throttling...), incl. 429 sent inside a 200 stream
    │   └── ServerError            5xx
    ├── APIConnectionError       could not connect / connection dropped before content
    │   └── APITimeoutError        connect, idle-read or total timeout (also a TimeoutError)
    ├── StreamInterruptedError   the stream broke after content began; .partial is set
    ├── ProtocolError            the bytes were not a DashScope SSE stream
    └── JSONOutputError          a complete answer asked to be JSON is not (also a ValueError)

Each carries ``request_id`` (or ``None``) and ``partial``: the last
:class:`~aiotongyi.ModelOutput` delivered before the failure, or ``None``.
No message, repr or log line ever holds the API key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import ModelOutput

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "JSONOutputError",
    "NotFoundError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "StreamInterruptedError",
    "TongyiError",
]


class TongyiError(Exception):
    """Root of every error raised for a failed call.

    :param message: a one-line description.
    :param request_id: DashScope's request id, when one is known.
    :param partial: the last output delivered before the failure, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        partial: ModelOutput | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: DashScope's request id (from the error body, frame or header), or ``None``.
        self.request_id = request_id
        #: The last :class:`ModelOutput` delivered before the failure, or ``None``.
        self.partial = partial
        #: ``embed``/``rerank``: indices of the inputs whose request failed (else ``()``).
        self.failed_inputs: tuple[int, ...] = ()

    def __str__(self) -> str:
        if self.request_id:
            return f"{self.message} (request_id={self.request_id})"
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, request_id={self.request_id!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds from args alone, which keyword-only fields cannot
        # survive: rebuild bare, then restore every attribute.
        return _restore, (type(self), self.args), self.__dict__.copy()


class APIError(TongyiError):
    """The service answered with an error.

    :param status_code: the effective HTTP status (an in-stream ``:HTTP_STATUS/NNN``
        comment wins over the response status).
    :param code: DashScope's error code, e.g. ``"InvalidParameter"`` (``""`` when
        the body had none, as with an HTML gateway page).
    :param message: the service's message.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str = "",
        request_id: str | None = None,
        partial: ModelOutput | None = None,
    ) -> None:
        super().__init__(message, request_id=request_id, partial=partial)
        self._headers: dict[str, str] | None = None
        #: The effective HTTP status of the error.
        self.status_code = status_code
        #: DashScope's error code (``""`` when none was given).
        self.code = code

    def __str__(self) -> str:
        head = (
            f"{self.status_code} {self.code}: {self.message}"
            if self.code
            else (f"{self.status_code}: {self.message}")
        )
        if self.request_id:
            return f"{head} (request_id={self.request_id})"
        return head

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status_code={self.status_code}, code={self.code!r}, "
            f"message={self.message!r}, request_id={self.request_id!r})"
        )

    @property
    def headers(self) -> dict[str, str] | None:
        """Headers of the HTTP response the error came with (``None`` if none).

        A plain ``dict`` with lower-case names (``error.headers["retry-after"]``);
        of a repeated header, the last value.
        """
        return self._headers

    @headers.setter
    def headers(self, headers: Mapping[str, str] | None) -> None:
        self._headers = (
            None if headers is None else {str(k).lower(): str(v) for k, v in headers.items()}
        )


class BadRequestError(APIError):
    """400: invalid parameters, content inspection, arrears, wrong path."""


class AuthenticationError(APIError):
    """401/403: invalid key or no access, and a missing key (raised before any request)."""


class NotFoundError(APIError):
    """404: unknown model or workspace."""


class RateLimitError(APIError):
    """429: throttling or exhausted quota, also when sent inside a 200 stream."""


class ServerError(APIError):
    """5xx: the service or a gateway failed."""


class APIConnectionError(TongyiError):
    """Could not connect, or the connection dropped before any content arrived."""


class APITimeoutError(APIConnectionError, TimeoutError):
    """A connect, idle-read or total timeout expired (``partial`` is set after content)."""


class StreamInterruptedError(TongyiError):
    """The stream broke after content began; ``partial`` holds what was delivered."""


class ProtocolError(TongyiError):
    """The bytes received were not a DashScope SSE stream or JSON reply."""


class JSONOutputError(TongyiError, ValueError):
    """The answer was expected to be JSON and is not; ``partial`` is the whole answer."""

    #: What did not fit the schema given to ``generate_json(schema=...)``: one
    #: ``{"loc": (key, index, ...), "msg": str}`` per problem; ``()`` when the
    #: text was not JSON at all.
    errors: tuple[Mapping[str, object], ...] = ()

    @property
    def text(self) -> str:
        """The raw text of the answer (``partial.text``)."""
        return self.partial.text if self.partial is not None else ""


def _restore(cls: type[TongyiError], args: tuple[object, ...]) -> TongyiError:
    """Unpickle an error: a bare instance; ``__setstate__`` then restores its attributes."""
    error = cls.__new__(cls)
    error.args = args
    return error
