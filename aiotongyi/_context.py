"""What one call needs from its client, frozen: the stream never sees the client itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

from ._models import Timeout
from ._request import GenerateParams, PreparedRequest
from ._retry import RetryPolicy
from ._sessions import SessionRegistry
from ._transport import SecretHeaders

if TYPE_CHECKING:
    from ._hooks import ObserverFactory

__all__ = ["CallContext", "CallOptions", "CallParams"]


class CallOptions(TypedDict, total=False):
    """Per-call options: how one call is sent, not what the model is asked."""

    headers: Mapping[str, str] | None
    api_key: str | None
    max_retries: int | None
    workspace: str | None


class CallParams(GenerateParams, CallOptions, total=False):
    """Everything a generate call takes as keywords."""


@dataclasses.dataclass(frozen=True, slots=True)
class CallContext:
    """The settings and resources a call runs with.

    :param owner: the client (or sibling) the call came from, kept alive while
        the call runs so that dropping the client mid-stream does not close it.
    """

    base_url: str
    headers: SecretHeaders
    proxy: str | None
    timeout: Timeout
    retry: RetryPolicy
    sessions: SessionRegistry
    owner: object = dataclasses.field(repr=False, compare=False)
    #: Makes each call's hooks/telemetry/limiter observer; ``None`` when nothing observes.
    observe: ObserverFactory | None = None

    def headers_for(self, request: PreparedRequest) -> Mapping[str, str]:
        """The client's headers, with the request's own on top."""
        if not request.headers:
            return self.headers
        return SecretHeaders({**self.headers, **request.headers})

    def replace(self, **changes: object) -> CallContext:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
