"""Example values from a JSON schema.

The simulator needs tool-call arguments and structured outputs that a client
can validate against the schema it sent. The values are deterministic (no
randomness), so a given schema always produces the same JSON: tests and
benchmarks can compare replies byte for byte.

Only the parts of JSON Schema that function-calling schemas use in practice
are understood; anything else falls back to a plain value of the right type.
"""

from __future__ import annotations

import math
from typing import Any

# Recursive schemas ($ref to an ancestor) would otherwise never end; past this
# depth containers come out empty.
_MAX_DEPTH = 16

_STRING = "example"
_INTEGER = 1
_NUMBER = 1.5


def fake_from_schema(schema: Any) -> Any:
    """Return a value that conforms to ``schema`` (a JSON-schema dict)."""
    root = schema if isinstance(schema, dict) else {}
    return _fake(schema, root, 0)


def _fake(schema: Any, root: dict, depth: int) -> Any:
    if not isinstance(schema, dict):
        # `true` / `{}`-like schemas accept anything.
        return _STRING
    if depth > _MAX_DEPTH:
        return _empty(_type_of(schema))

    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = _resolve(root, ref)
        if target is not None:
            return _fake(target, root, depth + 1)

    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _fake(options[0], root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        schema = _merge_all_of(schema, root)

    kind = _type_of(schema)
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind == "integer":
        return _number(schema, integer=True)
    if kind == "number":
        return _number(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema)


def _type_of(schema: dict) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        # ["string", "null"] means "optional string": prefer the real type.
        real = [k for k in kind if str(k).lower() != "null"]
        kind = real[0] if real else "null"
    if isinstance(kind, str):
        # Gemini's OpenAPI-style schemas spell types in capitals ("OBJECT").
        return kind.lower()
    if any(k in schema for k in ("properties", "required", "additionalProperties")):
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _empty(kind: str) -> Any:
    return {"object": {}, "array": [], "integer": 0, "number": 0.0, "boolean": False,
            "null": None}.get(kind, "")


def _object(schema: dict, root: dict, depth: int) -> dict:
    props = schema.get("properties")
    props = props if isinstance(props, dict) else {}
    # Optional properties are filled too: it exercises more of the client's
    # parsing, and any declared property is allowed.
    out = {name: _fake(sub, root, depth + 1) for name, sub in props.items()}
    extra = schema.get("additionalProperties")
    for name in schema.get("required") or ():
        if isinstance(name, str) and name not in out:
            out[name] = _fake(extra if isinstance(extra, dict) else {}, root, depth + 1)
    return out


def _array(schema: dict, root: dict, depth: int) -> list:
    prefix = schema.get("prefixItems")
    items = schema.get("items")
    if isinstance(items, list):  # draft-04 tuple form
        prefix, items = items, schema.get("additionalItems")
    out = [_fake(sub, root, depth + 1) for sub in prefix] if isinstance(prefix, list) else []

    low = _int_or(schema.get("minItems"), 0)
    high = _int_or(schema.get("maxItems"), None)
    want = max(low, 1, len(out))
    if high is not None:
        want = min(want, high)
    if len(out) < want and items is not False:
        item = items if isinstance(items, dict) else {}
        out.extend(_fake(item, root, depth + 1) for _ in range(want - len(out)))
    return out[:want]


def _string(schema: dict) -> str:
    value = _STRING
    low = _int_or(schema.get("minLength"), 0)
    high = _int_or(schema.get("maxLength"), None)
    if len(value) < low:
        value += "x" * (low - len(value))
    if high is not None:
        value = value[:high]
    return value


def _number(schema: dict, integer: bool) -> int | float:
    low, low_excl = _bound(schema, "minimum", "exclusiveMinimum")
    high, high_excl = _bound(schema, "maximum", "exclusiveMaximum")
    if low is not None and high is not None:
        value = (low + high) / 2
    elif low is not None:
        value = low + 1 if low_excl else low
    elif high is not None:
        value = high - 1 if high_excl else high
    else:
        value = _INTEGER if integer else _NUMBER
    if not integer:
        return float(value)
    result = math.ceil(value) if low is not None else math.floor(value)
    if low is not None and (result < low or (low_excl and result == low)):
        result += 1
    return int(result)


def _bound(schema: dict, inclusive: str, exclusive: str) -> tuple[float | None, bool]:
    value = schema.get(inclusive)
    value = value if _is_number(value) else None
    excl = schema.get(exclusive)
    if isinstance(excl, bool):  # draft-04: a flag on minimum/maximum
        return value, excl and value is not None
    if _is_number(excl):
        return excl, True
    return value, False


def _merge_all_of(schema: dict, root: dict) -> dict:
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    props = dict(merged.get("properties") or {})
    required = list(merged.get("required") or [])
    for part in schema["allOf"]:
        if isinstance(part, dict) and isinstance(part.get("$ref"), str):
            part = _resolve(root, part["$ref"]) or part
        if not isinstance(part, dict):
            continue
        props.update(part.get("properties") or {})
        required.extend(r for r in part.get("required") or [] if r not in required)
        for key, value in part.items():
            if key not in ("properties", "required"):
                merged.setdefault(key, value)
    if props:
        merged["properties"] = props
    if required:
        merged["required"] = required
    return merged


def _resolve(root: dict, ref: str) -> dict | None:
    """Follow a local JSON pointer like ``#/$defs/Item``; remote refs are not fetched."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for raw in ref[1:].split("/")[1:]:
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return node if isinstance(node, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int_or(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
