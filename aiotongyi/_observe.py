"""Which observers a client's calls get: hooks, OpenTelemetry, a rate limiter, or none."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ._hooks import Hooks, ObserverFactory
from ._ratelimit import RateLimiter

__all__ = ["observer_factory", "telemetry_wanted"]

_TELEMETRY_ENV = "AIOTONGYI_TELEMETRY"
_MISSING_OTEL = (
    "telemetry needs the OpenTelemetry API: pip install 'aiotongyi[otel]' "
    f"(or leave telemetry off: telemetry=False, {_TELEMETRY_ENV} unset)"
)


def telemetry_wanted(telemetry: bool | None) -> bool:
    """``telemetry``, or the ``AIOTONGYI_TELEMETRY`` environment variable when ``None``."""
    if telemetry is None:
        return os.environ.get(_TELEMETRY_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(telemetry, bool):
        raise ValueError(f"telemetry must be True, False or None, not {telemetry!r}")
    return telemetry


def observer_factory(
    *,
    base_url: str,
    hooks: Hooks | Sequence[Hooks] | None,
    telemetry: bool | None,
    tracer_provider: object | None,
    meter_provider: object | None,
    rate_limit: RateLimiter | None,
) -> ObserverFactory | None:
    """The client's per-call observer maker, or ``None`` when nothing observes calls.

    :raises ValueError: for hooks that are not :class:`Hooks` or a bad ``rate_limit``.
    :raises ImportError: when telemetry is on without ``aiotongyi[otel]``.
    """
    if hooks is None:
        chosen: list[Hooks] = []
    elif isinstance(hooks, Hooks):
        chosen = [hooks]
    else:
        chosen = list(hooks)
    if not all(isinstance(hook, Hooks) for hook in chosen):
        raise ValueError("hooks must be an aiotongyi.Hooks instance or a sequence of them")
    if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
        raise ValueError(f"rate_limit must be an aiotongyi.RateLimiter, not {rate_limit!r}")
    if telemetry_wanted(telemetry):
        try:
            from ._telemetry import TelemetryHooks  # imports opentelemetry: only when asked
        except ImportError as exc:
            raise ImportError(_MISSING_OTEL) from exc
        chosen.insert(0, TelemetryHooks(tracer_provider, meter_provider))  # type: ignore[arg-type]
    if not chosen and rate_limit is None:
        return None
    return ObserverFactory(chosen, rate_limit, base_url)
