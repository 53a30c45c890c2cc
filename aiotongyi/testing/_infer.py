"""The emulator's answer when nothing is scripted, inferred from the request.

Pure and deterministic: the same request body always gets the same
:class:`Reply`. It honours what a real model would: ``tools`` and
``tool_choice`` (a tool call whose arguments fit the tool's JSON schema),
``response_format`` (JSON, matching a ``json_schema``), ``enable_thinking``
(reasoning first), ``stop``, ``max_tokens`` (``finish_reason="length"``),
``n``, ``seed``, and tool results at the end of the conversation (a final text
answer that quotes them, so agent loops end). Token counts use
:func:`count_tokens`.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ._script import Reply, ToolCallScript

__all__ = ["count_tokens", "infer_reply", "split_tokens"]

# The emulator's token: a run of ASCII letters, digits and underscores, or any
# other single non-space character (one CJK character, one punctuation mark).
# Spaces are free.
_TOKEN = re.compile(r"[A-Za-z0-9_]+|\S")
_PIECE = re.compile(r"\s*(?:[A-Za-z0-9_]+|\S)")
_TOKENS_PER_FRAME = 3
# Caps on what a schema can ask for, so a careless minItems or minLength cannot
# make the emulator build a huge answer.
_MAX_ITEMS = 64
_MAX_LENGTH = 4096

_QUOTED = re.compile(r"(?<!\w)'([^'\n]+)'(?!\w)|\"([^\"\n]+)\"|“([^”\n]+)”|「([^」\n]+)」")
_KEY = re.compile(r"(?<!\w)['\"`]([A-Za-z_][A-Za-z0-9_]*)['\"`](?!\w)")
_PROPER = re.compile(r"[A-Z][\w'-]*(?:,?\s+[A-Z][\w'-]*)*")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_EXPRESSION = re.compile(r"[-+*/^%().\d\s]*\d[-+*/^%().\d\s]*")
_TOOL_WORDS = re.compile(r"\b(?:use|using|call|calling|invoke)\b.{0,20}\b(?:tool|function)s?\b")
_GENERIC_NAME_WORDS = frozenset({"get", "set", "the", "and", "for", "tool", "function", "run"})
_TOPIC_ENDS = frozenset("as in with and for that which to include including no but".split())
_SEED_WORDS = (
    "amber bright calm distant early gentle hidden idle jade keen lucid mellow "
    "narrow open quiet rapid silver tidal upper vivid warm young river stone cloud "
    "garden harbor lantern meadow orchard pebble summit valley willow"
).split()


def count_tokens(text: str) -> int:
    """Tokens in ``text`` by the emulator's rule (see the module docstring)."""
    return len(_TOKEN.findall(text))


def split_tokens(text: str) -> list[str]:
    """``text`` as pieces of one token each (leading spaces attached); joins back to it."""
    pieces = _PIECE.findall(text)
    tail = text[sum(len(piece) for piece in pieces) :]
    if tail:  # trailing spaces
        if pieces:
            pieces[-1] += tail
        else:
            pieces = [tail]
    return pieces


def infer_reply(payload: Mapping[str, Any]) -> Reply:
    """The reply to a chat request body when no :class:`Reply` is queued."""
    parameters = payload.get("parameters")
    params: Mapping[str, Any] = parameters if isinstance(parameters, Mapping) else {}
    messages = _messages(payload)
    prompt = _last_text(messages, "user")
    choices = params.get("n")
    n = choices if isinstance(choices, int) and 1 <= choices <= 4 else 1
    thinking: list[str] = []

    call = _tool_call(messages, params, prompt)
    if call is not None:
        if params.get("enable_thinking") is True:
            thinking = split_tokens(f"The user needs {call.name}; I will call it.")
        return Reply(thinking=thinking, tool_calls=[call], choices=n)

    text = _answer_text(messages, params, prompt)
    if params.get("enable_thinking") is True:
        reasoning = f'The user wrote "{_shorten(prompt)}". I will answer directly.'
        budget = params.get("thinking_budget")
        thinking = _frames(_cut_tokens(reasoning, budget)[0])
    text, cut = _cut_tokens(_apply_stop(text, params.get("stop")), params.get("max_tokens"))
    return Reply(
        thinking=thinking,
        text=_frames(text),
        choices=n,
        finish_reason="length" if cut else "stop",
    )


# -- the conversation ----------------------------------------------------------


def _messages(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    body_input = payload.get("input")
    messages = body_input.get("messages") if isinstance(body_input, Mapping) else None
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, Mapping)]


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _last_text(messages: Sequence[Mapping[str, Any]], role: str) -> str:
    for message in reversed(messages):
        if message.get("role") == role:
            return _text(message.get("content"))
    return ""


def _trailing_tool_results(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, _text(message.get("content")))
    return results


def _shorten(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _frames(text: str) -> list[str]:
    pieces = split_tokens(text)
    return [
        "".join(pieces[i : i + _TOKENS_PER_FRAME]) for i in range(0, len(pieces), _TOKENS_PER_FRAME)
    ]


# -- text answers --------------------------------------------------------------


def _answer_text(
    messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], prompt: str
) -> str:
    results = _trailing_tool_results(messages)
    if results:
        quoted = "; ".join(result.strip() or "(empty)" for result in results)
        noun = "tool returned" if len(results) == 1 else "tools returned"
        return f"The {noun}: {quoted}"
    response_format = params.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind == "json_schema":
        spec = response_format.get("json_schema") if isinstance(response_format, Mapping) else None
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, Mapping):
            values = _Values(prompt, schema, skip=_property_names(schema))
            value = values.generate(schema, "value")
            return json.dumps(value, ensure_ascii=False)
    if kind in ("json_object", "json_schema"):
        keys = list(dict.fromkeys(_KEY.findall(prompt))) or ["answer"]
        values = _Values(prompt, {}, skip=keys)
        return json.dumps(
            {key: values.string(key, {}) for key in keys},
            ensure_ascii=False,
        )
    text = _arithmetic(prompt) or "Hello! You said: " + prompt
    seed = params.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        words = random.Random(seed).sample(_SEED_WORDS, 5)
        text += f" ({' '.join(words)})"
    return text


_OPERATORS: dict[type[ast.AST], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _arithmetic(prompt: str) -> str | None:
    """``"3^3 = 27."`` for a prompt holding one small arithmetic expression."""
    for match in _EXPRESSION.finditer(prompt):
        expression = match.group().strip()
        if len(_NUMBER.findall(expression)) < 2 or not re.search(r"\d\s*[-+*/^%]", expression):
            continue
        try:
            value = _evaluate(ast.parse(expression.replace("^", "**"), mode="eval").body)
        except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
            continue
        if isinstance(value, float):
            value = int(value) if value.is_integer() else round(value, 6)
        return f"{expression} = {value}."
    return None


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        if isinstance(node.value, bool):
            raise ValueError("not arithmetic")
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 10**6):
            raise ValueError("too large")
        result: float = _OPERATORS[type(node.op)](left, right)
        if isinstance(result, complex) or not math.isfinite(result):
            raise ValueError("not a real number")
        return result
    raise ValueError("not arithmetic")


def _apply_stop(text: str, stop: object) -> str:
    sequences = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    cut = len(text)
    for sequence in sequences:
        if isinstance(sequence, str) and sequence:
            found = text.find(sequence)
            if found != -1:
                cut = min(cut, found)
    return text[:cut]


def _cut_tokens(text: str, limit: object) -> tuple[str, bool]:
    """``text`` cut to ``limit`` tokens, and whether it was cut."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return text, False
    pieces = split_tokens(text)
    if count_tokens(text) <= limit:
        return text, False
    return "".join(pieces[:limit]), True


# -- tool calls ----------------------------------------------------------------


def _functions(params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    tools = params.get("tools")
    functions = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            functions.append(function)
    return functions


def _tool_call(
    messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any], prompt: str
) -> ToolCallScript | None:
    """The call a model would make here, or None for a text answer."""
    functions = _functions(params)
    choice = params.get("tool_choice")
    if not functions or choice == "none" or _trailing_tool_results(messages):
        return None
    chosen: Mapping[str, Any] | None = None
    if isinstance(choice, Mapping):
        forced = choice.get("function")
        name = forced.get("name") if isinstance(forced, Mapping) else None
        chosen = next((f for f in functions if f["name"] == name), None)
    if chosen is None:
        # The most relevant tool; max() keeps the first listed among equals.
        best = max(functions, key=lambda function: _relevance(function, prompt))
        # "required" forces a call; "auto" calls when the prompt asks for one.
        if (
            _relevance(best, prompt) > 0
            or choice in ("required", "any")
            or _TOOL_WORDS.search(prompt.lower())
        ):
            chosen = best
    if chosen is None:
        return None
    schema = chosen.get("parameters")
    schema = schema if isinstance(schema, Mapping) else {"type": "object", "properties": {}}
    arguments = _Values(prompt, schema, skip=_property_names(schema)).generate(schema, "arguments")
    text = json.dumps(arguments if isinstance(arguments, dict) else {}, ensure_ascii=False)
    call_id = "call_" + format(_stable_hash(chosen["name"] + prompt), "x")[:12]
    # Two fragments when there is something to split, as the service streams them.
    middle = len(text) // 2
    fragments = [text[:middle], text[middle:]] if len(text) > 2 else [text]
    return ToolCallScript(chosen["name"], fragments, id=call_id)


def _relevance(function: Mapping[str, Any], prompt: str) -> int:
    name = str(function["name"])
    lowered = prompt.lower()
    score = 10 if name.lower() in lowered else 0
    words = re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name)
    for word in words:
        word = word.lower()
        if len(word) >= 3 and word not in _GENERIC_NAME_WORDS and word in lowered:
            score += 1
    return score


def _property_names(schema: object) -> list[str]:
    """Every property name in a schema: quoted in a prompt, they name keys, not values."""
    names: list[str] = []
    if isinstance(schema, Mapping):
        properties = schema.get("properties")
        if isinstance(properties, Mapping):
            names.extend(str(name) for name in properties)
        for value in schema.values():
            names.extend(_property_names(value))
    elif isinstance(schema, list):
        for item in schema:
            names.extend(_property_names(item))
    return names


def _stable_hash(text: str) -> int:
    value = 0xCBF29CE484222325  # FNV-1a: stable across processes, unlike hash()
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


# -- values from a JSON schema -------------------------------------------------


class _Values:
    """Values that fit a JSON schema, taken from the prompt where it offers them."""

    def __init__(self, prompt: str, root: Mapping[str, Any], *, skip: Sequence[str] = ()) -> None:
        self.root = root
        self.prompt = prompt
        quoted = (next(g for g in match.groups() if g) for match in _QUOTED.finditer(prompt))
        self.quoted: Iterator[str] = iter([text for text in quoted if text not in skip])
        self.proper: Iterator[str] = iter(
            match.group()
            for match in _PROPER.finditer(prompt)
            if match.start() > 0
            and not match.group().isupper()  # acronyms (JSON, API) name no value
            and not re.search(r"[.!?]\s*$", prompt[: match.start()])
        )
        self.numbers: list[str] = _NUMBER.findall(prompt)
        self.topic = _topic(prompt)
        self.depth = 0

    def generate(self, schema: Mapping[str, Any], name: str) -> Any:
        schema = self._resolve(schema)
        self.depth += 1
        try:
            if self.depth > 16:  # a recursive schema: stop where null or nothing is fine
                return None
            return self._generate(schema, name)
        finally:
            self.depth -= 1

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while isinstance(schema.get("$ref"), str) and seen < 32:
            seen += 1
            target: Any = self.root
            for part in schema["$ref"].lstrip("#/").split("/"):
                target = target.get(part) if isinstance(target, Mapping) else None
            if not isinstance(target, Mapping):
                return {}
            schema = target
        return schema

    def _generate(self, schema: Mapping[str, Any], name: str) -> Any:
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._enum(schema["enum"])
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                usable = [o for o in options if isinstance(o, Mapping)]
                not_null = [o for o in usable if self._resolve(o).get("type") != "null"]
                if usable:
                    return self.generate((not_null or usable)[0], name)
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                if isinstance(part, Mapping):
                    merged.update(self._resolve(part))
            return self.generate(merged, name)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        if kind == "object":
            return self._object(schema)
        if kind == "array":
            items = schema.get("items")
            count = min(max(1, _int(schema.get("minItems"), 1)), _MAX_ITEMS)
            return [
                self.generate(items if isinstance(items, Mapping) else {}, name)
                for _ in range(count)
            ]
        if kind in ("integer", "number"):
            return self._number(schema, integer=kind == "integer")
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        return self.string(name, schema)

    def _object(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {
            key: self.generate(value if isinstance(value, Mapping) else {}, str(key))
            for key, value in properties.items()
        }

    def _enum(self, options: list[Any]) -> Any:
        lowered = self.prompt.lower()
        for option in options:
            if isinstance(option, str) and option.lower() in lowered:
                return option
        return options[0]

    def _number(self, schema: Mapping[str, Any], *, integer: bool) -> float:
        def fits(value: float) -> bool:
            checks = (
                ("minimum", operator.ge),
                ("maximum", operator.le),
                ("exclusiveMinimum", operator.gt),
                ("exclusiveMaximum", operator.lt),
            )
            for key, compare in checks:
                bound = schema.get(key)
                if isinstance(bound, int | float) and not isinstance(bound, bool):
                    if not compare(value, bound):
                        return False
            return True

        while self.numbers:
            text = self.numbers.pop(0)
            value = float(text)
            if not math.isfinite(value) or (integer and not value.is_integer()):
                continue
            if fits(value):
                return int(value) if integer or value.is_integer() else value
        for candidate in (0, 1, schema.get("minimum"), schema.get("maximum")):
            if isinstance(candidate, int | float) and fits(candidate):
                return int(candidate) if integer else candidate
        low = schema.get("exclusiveMinimum")
        if isinstance(low, int | float):
            return math.floor(low) + 1 if integer else low + 0.5
        return 0

    def string(self, name: str, schema: Mapping[str, Any]) -> str:
        value = next(self.quoted, None) or next(self.proper, None)
        if value is None:
            words = name.replace("_", " ").strip() or "value"
            value = f"A {words} about {self.topic}" if self.topic else f"example {words}"
        low = min(_int(schema.get("minLength"), 0), _MAX_LENGTH)
        high = _int(schema.get("maxLength"), 0)
        if len(value) < low:
            value = value.ljust(low, ".")
        if high and len(value) > high:
            value = value[:high]
        return value


def _topic(prompt: str) -> str:
    """What the prompt is "about": up to four words after that word."""
    found = re.search(r"\babout\s+(.+)", prompt)
    if found is None:
        return ""
    words: list[str] = []
    for word in re.split(r"[.,;:!?'\"()]", found.group(1))[0].split():
        if word.lower() in _TOPIC_ENDS or len(words) == 4:
            break
        words.append(word)
    return " ".join(words)


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
