"""OpenTelemetry GenAI spans and metrics, built as :class:`~aiotongyi.Hooks` (``aiotongyi[otel]``).

Imported only when telemetry is switched on.  One span per call, ``chat
{model}`` of kind CLIENT, from the first request (before any rate-limit
wait) to the end of the stream, whatever ends it; each retry is an event on
that span (``aiotongyi.retry``), not a child span: the call is one operation
for the caller, and its attempts share one trace line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import _semconv as sc
from ._exceptions import TongyiError
from ._hooks import CallInfo, Hooks
from ._models import ModelOutput
from ._version import __version__

__all__ = ["TelemetryHooks", "capture_content_enabled"]

_SCOPE = "aiotongyi"
_SCHEMA_URL = f"https://opentelemetry.io/schemas/{sc.SEMCONV_VERSION}"
_NUMERIC_PARAMETERS = {
    "temperature": sc.REQUEST_TEMPERATURE,
    "top_p": sc.REQUEST_TOP_P,
    "top_k": sc.REQUEST_TOP_K,
    "max_tokens": sc.REQUEST_MAX_TOKENS,
    "presence_penalty": sc.REQUEST_PRESENCE_PENALTY,
    "frequency_penalty": sc.REQUEST_FREQUENCY_PENALTY,
    "seed": sc.REQUEST_SEED,
}


def capture_content_enabled() -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` opts in to content."""
    value = os.environ.get(sc.CAPTURE_CONTENT_ENV, "").strip().lower()
    return value in ("1", "true", "span_only", "span_and_event")


def _error_type(error: BaseException) -> str:
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class _CallState:
    __slots__ = ("attributes", "last_chunk", "span")

    def __init__(self, span: trace.Span, attributes: dict[str, Any]) -> None:
        self.span = span
        self.attributes = attributes  # what the metrics are recorded with
        self.last_chunk = 0.0


class TelemetryHooks(Hooks):
    """Spans and metrics per the GenAI semantic conventions (see ``docs/observability.md``).

    :param tracer_provider: else the global one.
    :param meter_provider: else the global one.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(
            _SCOPE, __version__, tracer_provider, schema_url=_SCHEMA_URL
        )
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider, schema_url=_SCHEMA_URL)
        self._capture = capture_content_enabled()

        def histogram(spec: tuple[str, str, str], buckets: Sequence[float]) -> Any:
            name, unit, description = spec
            return meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=list(buckets),
            )

        self._duration = histogram(sc.METRIC_OPERATION_DURATION, sc.DURATION_BUCKETS)
        self._tokens = histogram(sc.METRIC_TOKEN_USAGE, sc.TOKEN_BUCKETS)
        self._ttfc = histogram(sc.METRIC_TIME_TO_FIRST_CHUNK, sc.DURATION_BUCKETS)
        self._per_chunk = histogram(sc.METRIC_TIME_PER_OUTPUT_CHUNK, sc.DURATION_BUCKETS)

    def _start(self, call: CallInfo) -> _CallState:
        state: _CallState | None = call.data.get(self)
        if state is not None:
            return state
        url = urlsplit(call.base_url)
        common: dict[str, Any] = {
            sc.OPERATION_NAME: call.operation,
            sc.PROVIDER_NAME: sc.PROVIDER_DASHSCOPE,
            sc.REQUEST_MODEL: call.model,
        }
        if url.hostname:
            common[sc.SERVER_ADDRESS] = url.hostname
            common[sc.SERVER_PORT] = url.port or (443 if url.scheme == "https" else 80)
        attributes = dict(common)
        if call.stream:  # set if and only if the request streams
            attributes[sc.REQUEST_STREAM] = True
        params = call.parameters
        for name, key in _NUMERIC_PARAMETERS.items():
            value = params.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                attributes[key] = value
        stop = params.get("stop")
        if isinstance(stop, str):
            attributes[sc.REQUEST_STOP_SEQUENCES] = [stop]
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            attributes[sc.REQUEST_STOP_SEQUENCES] = stop
        n = params.get("n")
        if isinstance(n, int) and not isinstance(n, bool) and n != 1:
            attributes[sc.REQUEST_CHOICE_COUNT] = n
        if self._capture:
            attributes.update(_input_content(call))
        # The span's parent is whatever span was current where the call was made.
        parent = call.context.run(otel_context.get_current)
        span = self._tracer.start_span(
            f"{call.operation} {call.model}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=time.time_ns() - int((time.perf_counter() - call.started) * 1e9),
        )
        state = call.data[self] = _CallState(span, common)
        return state

    def on_request(self, call: CallInfo, attempt: int) -> None:
        self._start(call)

    def on_retry(self, call: CallInfo, delay: float, error: TongyiError) -> None:
        self._start(call).span.add_event(
            sc.EVENT_RETRY,
            {
                sc.RETRY_ATTEMPT: call.attempt + 1,
                sc.RETRY_DELAY: delay,
                sc.ERROR_TYPE: _error_type(error),
            },
        )

    def on_first_content(self, call: CallInfo, output: ModelOutput) -> None:
        state = self._start(call)
        now = time.perf_counter()
        state.last_chunk = now
        if call.stream:  # the conventions: streaming calls only
            elapsed = now - call.started
            state.span.set_attribute(sc.RESPONSE_TIME_TO_FIRST_CHUNK, elapsed)
            self._ttfc.record(elapsed, state.attributes)

    def on_chunk(self, call: CallInfo, outputs: Sequence[ModelOutput]) -> None:
        state: _CallState | None = call.data.get(self)
        if state is None or not call.stream:
            return
        now = time.perf_counter()
        if state.last_chunk != now and state.last_chunk:
            self._per_chunk.record(now - state.last_chunk, state.attributes)
        state.last_chunk = now

    def on_end(self, call: CallInfo) -> None:
        state = self._start(call)
        span = state.span
        output, error = call.output, call.error
        metric_attributes = dict(state.attributes)
        ended: dict[str, Any] = {}
        if call.request_id:
            ended[sc.RESPONSE_ID] = call.request_id
        if output is not None:
            model = output.model or call.model
            ended[sc.RESPONSE_MODEL] = metric_attributes[sc.RESPONSE_MODEL] = model
            if output.finish_reason and output.finish_reason != "null":
                ended[sc.RESPONSE_FINISH_REASONS] = [output.finish_reason]
            usage = output.usage
            if usage is not None:
                ended[sc.USAGE_INPUT_TOKENS] = usage.prompt_tokens
                ended[sc.USAGE_OUTPUT_TOKENS] = usage.completion_tokens
                if usage.cached_tokens is not None:
                    ended[sc.USAGE_CACHE_READ_INPUT_TOKENS] = usage.cached_tokens
                if usage.reasoning_tokens is not None:
                    ended[sc.USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
            if self._capture:
                ended[sc.OUTPUT_MESSAGES] = _output_content(output)
        if call.closed_early:
            ended[sc.CLOSED_EARLY] = True
        if call.cancelled:
            ended[sc.CANCELLED] = True
        if error is not None:
            error_type = _error_type(error)
            ended[sc.ERROR_TYPE] = metric_attributes[sc.ERROR_TYPE] = error_type
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.record_exception(error)
        span.set_attributes(ended)
        span.end()
        self._duration.record(time.perf_counter() - call.started, metric_attributes)
        usage = None if output is None else output.usage
        if usage is not None:
            input_attributes = {**metric_attributes, sc.TOKEN_TYPE: sc.TOKEN_TYPE_INPUT}
            output_attributes = {**metric_attributes, sc.TOKEN_TYPE: sc.TOKEN_TYPE_OUTPUT}
            self._tokens.record(usage.prompt_tokens, input_attributes)
            self._tokens.record(usage.completion_tokens, output_attributes)


def _parts(content: object) -> list[dict[str, Any]]:
    """A message's content as the conventions' parts."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for item in content:
            if isinstance(item, Mapping) and isinstance(item.get("text"), str):
                parts.append({"type": "text", "content": item["text"]})
            elif isinstance(item, Mapping):
                kind = next(iter(item), "blob")
                parts.append({"type": "uri", "modality": kind, "uri": str(item[kind])})
    return parts


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _input_content(call: CallInfo) -> dict[str, str]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in call.messages:
        role = message.get("role")
        if role == "system":
            system += _parts(message.get("content"))
            continue
        parts = _parts(message.get("content"))
        for tool_call in message.get("tool_calls") or ():
            function = tool_call.get("function") or {}
            parts.append(
                {
                    "type": "tool_call",
                    "id": tool_call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
        if role == "tool":
            parts = [
                {
                    "type": "tool_call_response",
                    "id": message.get("tool_call_id"),
                    "response": message.get("content"),
                }
            ]
        messages.append({"role": role, "parts": parts})
    content = {sc.INPUT_MESSAGES: _dumps(messages)}
    if system:
        content[sc.SYSTEM_INSTRUCTIONS] = _dumps(system)
    tools = call.parameters.get("tools")
    if tools:
        content[sc.TOOL_DEFINITIONS] = _dumps(tools)
    return content


def _output_content(output: ModelOutput) -> str:
    parts: list[dict[str, Any]] = []
    if output.thinking:
        parts.append({"type": "reasoning", "content": output.thinking})
    if output.text:
        parts.append({"type": "text", "content": output.text})
    parts += [
        {"type": "tool_call", "id": c.id, "name": c.name, "arguments": c.arguments}
        for c in output.tool_calls
    ]
    message = {"role": "assistant", "parts": parts, "finish_reason": output.finish_reason or ""}
    return _dumps([message])
