"""A small JSON Schema (2020-12) checker for the subset the TunedConfig schema uses.

The runtime must import with torch alone, so it cannot lean on the ``jsonschema`` package;
the search validates every export with that package against the same schema file, and a
test checks that both agree on tampered configs.
"""

from __future__ import annotations

import math
import re
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "integer": (int,), "number": (int, float), "null": (type(None),),
}


def _is(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def check(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None,
          path: str = "") -> list[str]:
    """Every violation as ``"<path>: <problem>"``; empty when ``value`` is valid."""
    root = root or schema
    where = path or "<top>"
    if "$ref" in schema:
        ref = schema["$ref"]
        node: Any = root
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return check(value, node, root, path)
    errors: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, t) for t in types):
            return [f"{where}: expected {' or '.join(types)}, got {type(value).__name__}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: must be {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, float) and not math.isfinite(value):
        errors.append(f"{where}: must be a finite number")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{where}: {value} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{where}: {value} is above {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{where}: {value} must be above {schema['exclusiveMinimum']}")
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", math.inf):
            errors.append(f"{where}: longer than {schema['maxLength']} characters")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{where}: shorter than {schema['minLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", math.inf):
            errors.append(f"{where}: more than {schema['maxItems']} items")
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += check(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(value, dict):
        errors += _check_object(value, schema, root, path)
    return errors


def _check_object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any],
                  path: str) -> list[str]:
    where = path or "<top>"
    errors = [f"{where}: missing required field {k!r}" for k in schema.get("required", [])
              if k not in value]
    if len(value) > schema.get("maxProperties", math.inf):
        errors.append(f"{where}: more than {schema['maxProperties']} fields")
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        sub = f"{path}.{key}" if path else key
        if "propertyNames" in schema:
            errors += [e.replace(f"{sub}:", f"{sub} (name):", 1)
                       for e in check(key, schema["propertyNames"], root, sub)]
        if key in props:
            errors += check(item, props[key], root, sub)
        elif extra is False:
            errors.append(f"{sub}: unknown field")
        elif isinstance(extra, dict):
            errors += check(item, extra, root, sub)
    return errors
