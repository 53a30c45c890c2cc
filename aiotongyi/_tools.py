"""Tools from typed Python functions, and one round of the calls a model asked for.

``tool(func)`` turns a function's signature and docstring into DashScope's
tool definition; ``run_tool_calls(output, tools)`` runs the calls of one
answer and returns the ``"tool"`` messages to append.  Not an agent loop:
the caller owns the loop, this only removes the boilerplate of one round.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from ._models import ModelOutput, ToolCall
from ._structured import (
    SchemaError,
    _Schema,
    convert,
    dumps,
    format_error,
    is_pydantic_model,
)

__all__ = ["Tool", "run_tool_calls", "sync_run_tool_calls", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

_SPHINX_PARAM = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+):\s*(.*)$")
_GOOGLE_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
_GOOGLE_PARAM = re.compile(r"^\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


class Tool(dict[str, Any], Generic[P, R]):
    """A tool definition (the mapping sent in ``tools=[...]``) that also knows how to run.

    Built by :func:`tool`; calling it calls the wrapped function.  A tool built
    from a pydantic model has no function: :meth:`parse` reads its calls.
    """

    def __init__(
        self,
        name: str,
        description: str,
        parameters: dict[str, Any],
        func: Callable[P, R] | None,
        signature: Mapping[str, tuple[Any, bool]],
        model: Any = None,
        accepts_extra: bool = False,
    ) -> None:
        function: dict[str, Any] = {"name": name, "description": description}
        function["parameters"] = parameters
        super().__init__(type="function", function=function)
        self.name = name
        self.func = func
        self._signature = signature
        self._model = model
        self._accepts_extra = accepts_extra

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.func is None:
            raise TypeError(f"tool {self.name!r} was built from a model and has no function")
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def bind(self, arguments: str) -> tuple[dict[str, Any], list[SchemaError]]:
        """The keyword arguments a call's JSON text gives, or what is wrong with it."""
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except ValueError as exc:
            return {}, [{"loc": (), "msg": f"the arguments are not valid JSON ({exc})"}]
        errors: list[SchemaError] = []
        if self._model is not None:
            instance = convert(self._model, value, errors)
            return ({} if errors else {"value": instance}), errors
        if not isinstance(value, dict):
            return {}, [{"loc": (), "msg": "the arguments must be a JSON object"}]
        kwargs: dict[str, Any] = {}
        for name, (annotation, required) in self._signature.items():
            if name in value:
                kwargs[name] = convert(annotation, value[name], errors, (name,))
            elif required:
                errors.append({"loc": (name,), "msg": "missing"})
        for name in value:
            if name not in self._signature:
                if self._accepts_extra:
                    kwargs[name] = value[name]
                else:
                    errors.append({"loc": (name,), "msg": "unexpected argument"})
        return kwargs, errors

    def parse(self, call: ToolCall) -> Any:
        """A call's arguments as an instance of the tool's model (model tools only).

        :raises ValueError: when the arguments do not fit the model.
        """
        kwargs, errors = self.bind(call.arguments)
        if errors:
            raise ValueError("; ".join(format_error(error) for error in errors))
        return kwargs["value"] if self._model is not None else kwargs


@overload
def tool(
    func: Callable[P, R], *, name: str | None = None, description: str | None = None
) -> Tool[P, R]: ...
@overload
def tool(
    func: None = None, *, name: str | None = None, description: str | None = None
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    func: Callable[P, R] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """A tool definition from a typed function (or a pydantic model class).

    The function's name, docstring (first paragraph) and parameters (types
    from annotations, descriptions from ``:param x:`` lines, a Google-style
    ``Args:`` section or ``Annotated[T, "description"]``) become DashScope's
    ``{"type": "function", "function": {...}}``.  Usable as ``@tool``,
    ``@tool(name=...)`` or ``tool(func)``; the result is a :class:`Tool`, a
    ``dict`` you pass in ``tools=[...]`` that still calls the function.

    :param func: a sync or async function with annotated parameters, or a
        pydantic model class (its JSON Schema becomes the parameters).
    :param name: the tool's name (default: the function's ``__name__``).
    :param description: else the docstring's first paragraph.
    :raises ValueError: for parameters that have no JSON form (``*args``,
        positional-only ones, unsupported annotations).
    """
    if func is None:

        def decorate(f: Callable[P, R]) -> Tool[P, R]:
            return tool(f, name=name, description=description)

        return decorate
    if is_pydantic_model(func):
        model = cast(Any, func)
        schema = dict(model.model_json_schema())
        summary = schema.pop("description", None) or ""
        schema.pop("title", None)
        return Tool(
            name or _snake(model.__name__),
            description if description is not None else summary,
            schema,
            None,
            {},
            model=model,
        )
    if isinstance(func, type) or not callable(func):
        raise ValueError(f"tool() takes a function or a pydantic model class, not {func!r}")
    return _from_function(func, name, description)


def _from_function(func: Callable[P, R], name: str | None, description: str | None) -> Tool[P, R]:
    tool_name = name or getattr(func, "__name__", "")
    if not tool_name or tool_name == "<lambda>":
        raise ValueError("tool() needs a name for a lambda: tool(func, name=...)")
    summary, param_docs = _parse_docstring(inspect.getdoc(func) or "")
    try:
        hints = _parameter_hints(func)
    except ValueError as exc:
        raise ValueError(f"tool {tool_name!r}: {exc}") from None
    defs: dict[str, Any] = {}
    builder = _Schema(defs)
    properties: dict[str, Any] = {}
    required: list[str] = []
    signature: dict[str, tuple[Any, bool]] = {}
    accepts_extra = False
    for param in inspect.signature(func).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            accepts_extra = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            raise ValueError(
                f"tool {tool_name!r}: parameter {param.name!r} cannot be given by keyword"
            )
        annotation = hints.get(param.name, Any)
        try:
            prop = builder.of(annotation, (param.name,))
        except ValueError as exc:
            raise ValueError(f"tool {tool_name!r}: {exc}") from None
        if param.name in param_docs and "description" not in prop:
            prop = {**prop, "description": param_docs[param.name]}
        properties[param.name] = prop
        is_required = param.default is param.empty
        if is_required:
            required.append(param.name)
        signature[param.name] = (annotation, is_required)
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": accepts_extra,
    }
    if defs:
        parameters["$defs"] = defs
    return Tool(
        tool_name,
        description if description is not None else summary,
        parameters,
        func,
        signature,
        accepts_extra=accepts_extra,
    )


def _parameter_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The resolved annotations of the parameters (the return type may not resolve)."""
    annotations = dict(getattr(func, "__annotations__", {}))
    annotations.pop("return", None)
    holder = type("parameters", (), {"__annotations__": annotations})
    globalns = getattr(inspect.unwrap(func), "__globals__", {})
    try:
        return typing.get_type_hints(holder, globalns=globalns, include_extras=True)
    except NameError as exc:
        raise ValueError(f"cannot resolve the annotations: {exc}") from None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and the parameter descriptions (Sphinx or Google style)."""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _SPHINX_PARAM.match(line) or _GOOGLE_SECTION.match(line):
            break
        summary.append(line.strip())
    params: dict[str, str] = {}
    current: str | None = None
    section: int | None = None  # indentation of a Google "Args:" header while inside it
    item: int | None = None  # indentation of that section's parameter lines
    for line in lines:
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if section is not None:
            if not text:
                continue
            if indent > section:
                match = _GOOGLE_PARAM.match(line)
                if match and (item is None or indent <= item):
                    item, current = indent, match.group(1)
                    params[current] = match.group(2).strip()
                elif current is not None:
                    params[current] = f"{params[current]} {text}"
                continue
            section = None  # a line back at the header's level ends the section
        match = _SPHINX_PARAM.match(line)
        if match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif _GOOGLE_SECTION.match(line):
            section, item, current = indent, None, None
        elif current is not None and text and indent > 0:
            params[current] = f"{params[current]} {text}"
        else:
            current = None
    return " ".join(summary), {key: value.strip() for key, value in params.items()}


# -- running a round -------------------------------------------------------------------


AnyTool = Tool[..., Any]
ToolsLike = Iterable[AnyTool | Callable[..., Any]] | Mapping[str, Callable[..., Any]]


def _index(tools: ToolsLike) -> dict[str, AnyTool]:
    if isinstance(tools, Mapping):
        items = [tool(func, name=key) for key, func in tools.items()]
    else:
        items = [item if isinstance(item, Tool) else tool(item) for item in tools]
    return {item.name: item for item in items}


def _message(call: ToolCall, content: str) -> dict[str, object]:
    return {"role": "tool", "content": content, "tool_call_id": call.id, "name": call.name}


def _plan(call: ToolCall, by_name: Mapping[str, AnyTool]) -> tuple[AnyTool, dict[str, Any]] | str:
    """The tool and its keyword arguments, or the text of a tool message saying what is wrong."""
    chosen = by_name.get(call.name)
    if chosen is None:
        known = ", ".join(sorted(by_name)) or "none"
        return f"error: there is no tool named {call.name!r} (tools: {known})"
    if chosen.func is None:
        raise ValueError(
            f"tool {chosen.name!r} was built from a model and has no function to run; "
            "read its calls with tool.parse(call)"
        )
    kwargs, errors = chosen.bind(call.arguments)
    if errors:
        problems = "; ".join(format_error(error) for error in errors)
        return f"error: the arguments do not fit {chosen.name}(): {problems}"
    return chosen, kwargs


async def run_tool_calls(output: ModelOutput, tools: ToolsLike) -> list[dict[str, object]]:
    """Run the tool calls ``output`` asked for; return the ``"tool"`` messages to append.

    One round, in call order: async functions run concurrently, sync ones
    are called in turn on the event loop's thread (wrap slow ones with
    ``asyncio.to_thread``).  A call naming an unknown tool, or with
    arguments that do not fit the function's signature (bad JSON, missing
    or extra arguments, wrong types), gets a tool message saying so,
    for the model to correct.  Results that are not ``str`` are sent as JSON.

    :param output: the final output of an answer with ``finish_reason == "tool_calls"``.
    :param tools: :class:`Tool` objects or plain functions (wrapped with
        :func:`tool`), or a mapping of name to function.
    :raises Exception: whatever a tool function raises (other calls of the
        round are cancelled).
    """
    by_name = _index(tools)
    plans = [_plan(call, by_name) for call in output.tool_calls]
    results: list[str] = [""] * len(plans)
    pending: dict[int, Awaitable[Any]] = {}
    try:
        for position, plan in enumerate(plans):
            if isinstance(plan, str):
                results[position] = plan
                continue
            chosen, kwargs = plan
            value = chosen(**kwargs)
            if inspect.isawaitable(value):
                pending[position] = value
            else:
                results[position] = dumps(value)
    except BaseException:  # a sync tool failed: the coroutines made so far never run
        for awaitable in pending.values():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
        raise
    if pending:
        tasks = [asyncio.ensure_future(awaitable) for awaitable in pending.values()]
        try:
            values = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        for position, value in zip(pending, values, strict=True):
            results[position] = dumps(value)
    return [_message(call, text) for call, text in zip(output.tool_calls, results, strict=True)]


def sync_run_tool_calls(output: ModelOutput, tools: ToolsLike) -> list[dict[str, object]]:
    """:func:`run_tool_calls` from synchronous code.

    When every tool the round calls is a plain function, they run in the
    calling thread, one after another.  When any is async, the whole round
    runs as :func:`run_tool_calls` on a private event loop in a worker thread,
    so this works even in a thread whose event loop is running.
    """
    by_name = _index(tools)
    called = [by_name[call.name] for call in output.tool_calls if call.name in by_name]
    if any(inspect.iscoroutinefunction(inspect.unwrap(item.func)) for item in called if item.func):
        return _on_worker_loop(output, by_name)
    messages = []
    for call in output.tool_calls:
        plan = _plan(call, by_name)
        if isinstance(plan, str):
            messages.append(_message(call, plan))
            continue
        chosen, kwargs = plan
        value = chosen(**kwargs)
        if inspect.isawaitable(value):  # a callable object returning one
            value = _on_worker_thread(value)
        messages.append(_message(call, dumps(value)))
    return messages


def _on_worker_loop(output: ModelOutput, by_name: Mapping[str, AnyTool]) -> list[dict[str, object]]:
    return cast(
        "list[dict[str, object]]",
        _on_worker_thread(run_tool_calls(output, list(by_name.values()))),
    )


def _on_worker_thread(awaitable: Awaitable[Any]) -> Any:
    """Await on a new event loop in a worker thread (this thread's loop may be running)."""

    async def wait() -> Any:
        return await awaitable

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="aiotongyi-tools") as pool:
        return pool.submit(asyncio.run, wait()).result()
