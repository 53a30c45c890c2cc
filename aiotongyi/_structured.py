"""Python types as JSON Schema, and JSON values checked and converted into them.

Used by ``generate_json(schema=...)`` (a pydantic model, a dataclass or a
``TypedDict`` -> ``response_format``, and the answer -> an instance) and by
:func:`aiotongyi.tool` (a function's parameters -> the tool's ``parameters``,
and a call's arguments -> keyword arguments).

Dataclasses, TypedDicts and the usual annotations (``str``, ``int``,
``float``, ``bool``, ``None``, ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``X | Y``, ``Literal``, ``Enum``, ``Annotated[X, "doc"]``,
``Any``) are handled here, so they need no extra; pydantic models (optional
extra ``aiotongyi[pydantic]``) are handed to pydantic wherever they appear.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys
import types
import typing
from collections.abc import Mapping, MutableSequence, Sequence
from typing import Any, TypeVar, cast

from ._exceptions import JSONOutputError
from ._models import ModelOutput

__all__ = [
    "SchemaError",
    "check_schema_type",
    "convert",
    "json_params",
    "json_schema",
    "parse_output",
    "response_format",
]

T = TypeVar("T")

#: One validation problem: ``{"loc": ("field", 0, ...), "msg": "..."}``.
SchemaError = dict[str, Any]

_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def is_pydantic_model(tp: object) -> bool:
    """A pydantic ``BaseModel`` subclass, recognised without importing pydantic."""
    return (
        isinstance(tp, type)
        and callable(getattr(tp, "model_json_schema", None))
        and callable(getattr(tp, "model_validate", None))
    )


def _is_typeddict(tp: object) -> bool:
    return typing.is_typeddict(tp) or _typing_extensions_typeddict(tp)


def _typing_extensions_typeddict(tp: object) -> bool:
    module = sys.modules.get("typing_extensions")
    check = getattr(module, "is_typeddict", None)
    return bool(check(tp)) if check is not None else False


def check_schema_type(schema: object) -> None:
    """Refuse, with a ``ValueError``, what ``generate_json(schema=...)`` cannot use."""
    if not (
        is_pydantic_model(schema)
        or _is_typeddict(schema)
        or (isinstance(schema, type) and dataclasses.is_dataclass(schema))
    ):
        raise ValueError(
            f"schema must be a pydantic model class, a dataclass or a TypedDict, not {schema!r}"
        )


def json_schema(tp: object) -> dict[str, Any]:
    """The JSON Schema of a type (``$defs`` of nested pydantic models hoisted to the top).

    :raises ValueError: for annotations that have no JSON form (or recursive types).
    """
    defs: dict[str, Any] = {}
    schema = _Schema(defs).of(tp, ())
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def response_format(schema: object) -> dict[str, Any]:
    """``response_format`` asking for JSON that fits ``schema``.

    ``strict`` is true when the schema meets strict mode's rules (every object
    closed, every property required): then the service enforces it.
    """
    check_schema_type(schema)
    body = json_schema(schema)
    name = _NAME.sub("_", getattr(schema, "__name__", "") or "answer")[:64]
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": body, "strict": _is_strict(body)},
    }


def json_params(params: Mapping[str, Any], schema: object | None) -> dict[str, Any]:
    """The parameters of a ``generate_json`` call: a ``response_format`` unless one is given."""
    params = dict(params)
    if schema is not None:
        check_schema_type(schema)
    if params.get("response_format") is None:
        params["response_format"] = (
            {"type": "json_object"} if schema is None else response_format(schema)
        )
    return params


def parse_output(output: ModelOutput, schema: Any = None) -> Any:
    """``output``'s text as JSON, converted into ``schema`` when one is given.

    :raises JSONOutputError: when the text is not JSON or does not fit;
        ``errors`` lists what did not fit, ``text`` is the raw answer.
    """
    value = output.parse_json()
    if schema is None:
        return value
    errors: list[SchemaError] = []
    result = convert(schema, value, errors)
    if errors:
        summary = "; ".join(format_error(error) for error in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        name = getattr(schema, "__name__", repr(schema))
        exc = JSONOutputError(
            f"the answer does not fit {name}: {summary}{more}",
            request_id=output.request_id,
            partial=output,
        )
        exc.errors = tuple(errors)
        raise exc
    return result


def format_error(error: SchemaError) -> str:
    """``"items.0.price: expected a number"``."""
    loc = ".".join(str(part) for part in error["loc"])
    return f"{loc}: {error['msg']}" if loc else str(error["msg"])


_MISSING = object()


def convert(tp: Any, value: Any, errors: list[SchemaError], loc: tuple[Any, ...] = ()) -> Any:
    """``value`` (decoded JSON) as an instance of ``tp``; problems are appended to ``errors``."""
    return _Converter(errors).run(tp, value, loc)


# -- schema ------------------------------------------------------------------------


def _split_annotated(tp: Any) -> tuple[Any, str | None]:
    """``Annotated[X, "doc", ...]`` -> ``(X, "doc")``."""
    if typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        doc = next((extra for extra in extras if isinstance(extra, str)), None)
        return base, doc
    return tp, None


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is typing.Union or origin is types.UnionType


def field_hints(tp: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass or TypedDict (``Annotated`` kept)."""
    try:
        return typing.get_type_hints(tp, include_extras=True)
    except NameError as exc:
        raise ValueError(f"cannot resolve the annotations of {tp.__name__}: {exc}") from None


class _Schema:
    def __init__(self, defs: dict[str, Any]) -> None:
        self._defs = defs
        self._stack: list[type] = []

    def of(self, tp: Any, loc: tuple[Any, ...]) -> dict[str, Any]:
        tp, doc = _split_annotated(tp)
        schema = self._bare(tp, loc)
        if doc:
            schema = {**schema, "description": doc}
        return schema

    def _bare(self, tp: Any, loc: tuple[Any, ...]) -> dict[str, Any]:
        if tp is Any or tp is object:
            return {}
        if tp is None or tp is type(None):
            return {"type": "null"}
        if tp is bool:
            return {"type": "boolean"}
        if tp is int:
            return {"type": "integer"}
        if tp is float:
            return {"type": "number"}
        if tp is str:
            return {"type": "string"}
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            return {"enum": [member.value for member in tp]}
        if is_pydantic_model(tp):
            return self._pydantic(tp)
        if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_typeddict(tp)):
            return self._object(tp, loc)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            return {"enum": list(args)}
        if _is_union(tp):
            return {"anyOf": [self.of(arg, loc) for arg in args]}
        if origin in (list, set, frozenset, Sequence, MutableSequence) or tp in (list, set):
            item = self.of(args[0], (*loc, 0)) if args else {}
            return {"type": "array", "items": item}
        if origin is tuple or tp is tuple:
            if not args or (len(args) == 2 and args[1] is Ellipsis):
                return {"type": "array", "items": self.of(args[0], loc) if args else {}}
            return {
                "type": "array",
                "prefixItems": [self.of(arg, (*loc, i)) for i, arg in enumerate(args)],
                "minItems": len(args),
                "maxItems": len(args),
            }
        if origin in (dict, Mapping) or tp is dict:
            if args and args[0] is not str:
                raise ValueError(f"{_where(loc)}JSON objects have str keys, not {args[0]!r}")
            return {"type": "object", "additionalProperties": self.of(args[1], loc) if args else {}}
        raise ValueError(f"{_where(loc)}{tp!r} has no JSON Schema form")

    def _object(self, tp: type, loc: tuple[Any, ...]) -> dict[str, Any]:
        if tp in self._stack:
            raise ValueError(f"{_where(loc)}recursive types are not supported ({tp.__name__})")
        self._stack.append(tp)
        try:
            hints = field_hints(tp)
            properties: dict[str, Any] = {}
            if dataclasses.is_dataclass(tp):
                required = []
                for f in dataclasses.fields(tp):
                    if not f.init:
                        continue
                    prop = self.of(hints.get(f.name, Any), (*loc, f.name))
                    description = f.metadata.get("description")
                    if isinstance(description, str):
                        prop = {**prop, "description": description}
                    properties[f.name] = prop
                    has_default = (
                        f.default is not dataclasses.MISSING
                        or f.default_factory is not dataclasses.MISSING
                    )
                    if not has_default:
                        required.append(f.name)
            else:
                keys = typeddict_required(tp, hints)
                for name, hint in hints.items():
                    properties[name] = self.of(_strip_required(hint), (*loc, name))
                required = [name for name in hints if name in keys]
        finally:
            self._stack.pop()
        schema: dict[str, Any] = {
            "type": "object",
            "title": tp.__name__,
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        doc = _own_doc(tp)
        if doc:
            schema["description"] = doc
        return schema

    def _pydantic(self, tp: Any) -> dict[str, Any]:
        schema = dict(tp.model_json_schema())
        self._defs.update(schema.pop("$defs", {}))
        return schema


def _own_doc(tp: type) -> str | None:
    """A class's own docstring (not the one dataclasses generate from the signature)."""
    doc = tp.__doc__
    if not doc or (dataclasses.is_dataclass(tp) and doc.startswith(f"{tp.__name__}(")):
        return None
    if _is_typeddict(tp) and doc.startswith(f"{tp.__name__}("):
        return None
    return " ".join(doc.split())


def typeddict_required(tp: type, hints: Mapping[str, Any]) -> set[str]:
    """A TypedDict's required keys, read from the hints too: with string annotations
    (``from __future__ import annotations``) older Pythons miss ``NotRequired``."""
    required = set(getattr(tp, "__required_keys__", hints))
    for name, hint in hints.items():
        marker = getattr(typing.get_origin(hint), "_name", None)
        if marker == "NotRequired":
            required.discard(name)
        elif marker == "Required":
            required.add(name)
    return required


def _strip_required(tp: Any) -> Any:
    """``Required[X]``/``NotRequired[X]`` -> ``X`` (TypedDict keys)."""
    origin = typing.get_origin(tp)
    if origin is not None and getattr(origin, "_name", None) in ("Required", "NotRequired"):
        return typing.get_args(tp)[0]
    return tp


def _where(loc: tuple[Any, ...]) -> str:
    return f"{'.'.join(str(part) for part in loc)}: " if loc else ""


def _is_strict(schema: Any) -> bool:
    """Strict mode's rule: every object lists all its properties as required and is closed."""
    if isinstance(schema, list):
        return all(_is_strict(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required", ())) != set(properties):
            return False
    return all(_is_strict(value) for key, value in schema.items() if key != "enum")


# -- conversion ----------------------------------------------------------------------


class _Converter:
    def __init__(self, errors: list[SchemaError]) -> None:
        self.errors = errors

    def fail(self, loc: tuple[Any, ...], msg: str) -> Any:
        self.errors.append({"loc": loc, "msg": msg})
        return _MISSING

    def run(self, tp: Any, value: Any, loc: tuple[Any, ...]) -> Any:
        tp, _ = _split_annotated(tp)
        tp = _strip_required(tp)
        if tp is Any or tp is object:
            return value
        if tp is None or tp is type(None):
            return None if value is None else self.fail(loc, f"expected null, got {_kind(value)}")
        if tp is bool:
            return value if isinstance(value, bool) else self._expected(loc, "a boolean", value)
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return self._expected(loc, "an integer", value)
        if tp is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            return self._expected(loc, "a number", value)
        if tp is str:
            return value if isinstance(value, str) else self._expected(loc, "a string", value)
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            try:
                return tp(value)
            except ValueError:
                allowed = ", ".join(repr(member.value) for member in tp)
                return self.fail(loc, f"expected one of {allowed}, got {value!r}")
        if is_pydantic_model(tp):
            return self._pydantic(tp, value, loc)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            return self._dataclass(tp, value, loc)
        if isinstance(tp, type) and _is_typeddict(tp):
            return self._typeddict(tp, value, loc)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin is typing.Literal:
            if any(value == arg and type(value) is type(arg) for arg in args):
                return value
            allowed = ", ".join(repr(arg) for arg in args)
            return self.fail(loc, f"expected one of {allowed}, got {value!r}")
        if _is_union(tp):
            return self._union(args, value, loc)
        if origin in (list, set, frozenset, Sequence, MutableSequence) or tp in (list, set):
            if not isinstance(value, list):
                return self._expected(loc, "an array", value)
            item_type = args[0] if args else Any
            items = [self.run(item_type, item, (*loc, i)) for i, item in enumerate(value)]
            if origin is frozenset:
                return frozenset(items)
            return set(items) if origin is set or tp is set else items
        if origin is tuple or tp is tuple:
            return self._tuple(args, value, loc)
        if origin in (dict, Mapping) or tp is dict:
            if not isinstance(value, dict):
                return self._expected(loc, "an object", value)
            item_type = args[1] if args else Any
            return {key: self.run(item_type, item, (*loc, key)) for key, item in value.items()}
        raise ValueError(f"{_where(loc)}{tp!r} has no JSON form")

    def _expected(self, loc: tuple[Any, ...], what: str, value: Any) -> Any:
        return self.fail(loc, f"expected {what}, got {_kind(value)}")

    def _union(self, args: tuple[Any, ...], value: Any, loc: tuple[Any, ...]) -> Any:
        for arg in args:  # the first alternative that fits, in declaration order
            trial: list[SchemaError] = []
            result = _Converter(trial).run(arg, value, loc)
            if not trial:
                return result
        names = " or ".join(_type_name(arg) for arg in args)
        return self.fail(loc, f"expected {names}, got {_kind(value)}")

    def _tuple(self, args: tuple[Any, ...], value: Any, loc: tuple[Any, ...]) -> Any:
        if not isinstance(value, list):
            return self._expected(loc, "an array", value)
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item_type = args[0] if args else Any
            return tuple(self.run(item_type, item, (*loc, i)) for i, item in enumerate(value))
        if len(value) != len(args):
            return self.fail(loc, f"expected {len(args)} items, got {len(value)}")
        return tuple(
            self.run(arg, item, (*loc, i))
            for i, (arg, item) in enumerate(zip(args, value, strict=True))
        )

    def fields(
        self,
        value: Any,
        loc: tuple[Any, ...],
        hints: Mapping[str, Any],
        required: set[str],
    ) -> dict[str, Any] | None:
        """Check an object's keys and convert its values (shared by every object-like type)."""
        if not isinstance(value, dict):
            self._expected(loc, "an object", value)
            return None
        before = len(self.errors)
        for name in hints:
            if name in required and name not in value:
                self.fail((*loc, name), "missing")
        for name in value:
            if name not in hints:
                self.fail((*loc, name), "unexpected field")
        converted = {
            name: self.run(hints[name], item, (*loc, name))
            for name, item in value.items()
            if name in hints
        }
        return None if len(self.errors) > before else converted

    def _dataclass(self, tp: type, value: Any, loc: tuple[Any, ...]) -> Any:
        hints = field_hints(tp)
        init_fields = [f for f in dataclasses.fields(tp) if f.init]
        required = {
            f.name
            for f in init_fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        converted = self.fields(
            value, loc, {f.name: hints.get(f.name, Any) for f in init_fields}, required
        )
        if converted is None:
            return _MISSING
        try:
            return tp(**converted)
        except (TypeError, ValueError) as exc:  # a __post_init__ that refuses the values
            return self.fail(loc, str(exc))

    def _typeddict(self, tp: type, value: Any, loc: tuple[Any, ...]) -> Any:
        hints = field_hints(tp)
        converted = self.fields(value, loc, hints, typeddict_required(tp, hints))
        return _MISSING if converted is None else converted

    def _pydantic(self, tp: Any, value: Any, loc: tuple[Any, ...]) -> Any:
        from pydantic import ValidationError

        try:
            return tp.model_validate(value)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.errors.append({"loc": (*loc, *error["loc"]), "msg": error["msg"]})
            return _MISSING


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _type_name(tp: Any) -> str:
    tp, _ = _split_annotated(tp)
    if tp is None or tp is type(None):
        return "null"
    return cast(str, getattr(tp, "__name__", None) or repr(tp))


def dumps(value: Any) -> str:
    """JSON text of a tool's result (dataclasses and pydantic models included)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=_default)


def _default(value: Any) -> Any:
    if is_pydantic_model(type(value)):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)
