"""JSON Schema for the route table: small builders and the request validator.

Routes declare their bodies with these builders; the same dicts are served in
/api/v1/openapi.json and enforced here, so the document cannot drift from the
server. The validator covers the subset the builders produce (object with
properties/required/additionalProperties, string with enum/maxLength,
integer/number with bounds, boolean, array) and reports the first problem as
INVALID_REQUEST naming the field by its dotted path.

Enums are matched case-insensitively and returned in the schema's spelling:
REST bodies use lowercase enum values, clients may send "GOLD".
"""
from __future__ import annotations

from typing import Any

from rustymt.service.errors import ServiceError


# ---- builders


def obj(properties: dict[str, dict], required: tuple[str, ...] | list[str] | None = None, *,
        extra: dict | bool = False, description: str | None = None) -> dict:
    """An object; `required` defaults to every property; unknown fields refused unless `extra`."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties if required is None else required),
        "additionalProperties": extra,
    }
    if description:
        schema["description"] = description
    return schema


def string(max_length: int | None = None, *, description: str | None = None, nullable: bool = False, **more) -> dict:
    schema: dict[str, Any] = {"type": ["string", "null"] if nullable else "string", **more}
    if max_length is not None:
        schema["maxLength"] = max_length
    if description:
        schema["description"] = description
    return schema


def enum(values, *, description: str | None = None) -> dict:
    schema: dict[str, Any] = {"type": "string", "enum": list(values)}
    if description:
        schema["description"] = description + " (case-insensitive)"
    return schema


def integer(minimum: int | None = None, maximum: int | None = None, *, nullable: bool = False, description: str | None = None) -> dict:
    schema: dict[str, Any] = {"type": ["integer", "null"] if nullable else "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    if description:
        schema["description"] = description
    return schema


def number(description: str | None = None) -> dict:
    return {"type": "number", **({"description": description} if description else {})}


def boolean(description: str | None = None) -> dict:
    return {"type": "boolean", **({"description": description} if description else {})}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def string_map(description: str | None = None) -> dict:
    return {"type": "object", "additionalProperties": {"type": "string"}, **({"description": description} if description else {})}


TIMESTAMP = string(description="ISO-8601 UTC, e.g. 2025-12-11T10:00:00Z", format="date-time")
SOURCE_NOTE = string(description="where the numbers come from (present while a counter is not measured)")

ERROR = obj({
    "error": obj({
        "code": string(description="one of the spec's error codes"),
        "message": string(),
        "details": {"description": "structured context; names the offending field for validation errors"},
    }),
})


# ---- validator

_JSON_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


_A_TYPE = {"object": "an object", "array": "an array", "string": "a string", "integer": "an integer",
           "number": "a number", "boolean": "a boolean", "null": "null"}


def _invalid(path: str, message: str) -> ServiceError:
    field = path or "body"
    return ServiceError("INVALID_REQUEST", f"{field}: {message}", field=field)


def validate(schema: dict, value: Any, path: str = "") -> Any:
    """`value` checked against `schema`, with enum values canonicalized; raises INVALID_REQUEST."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_JSON_TYPES[name](value) for name in names):
            wanted = " or ".join(_A_TYPE[name] for name in names)
            raise _invalid(path, f"must be {wanted}")
    if value is None:
        return None
    if "enum" in schema:
        for choice in schema["enum"]:
            if isinstance(value, str) and value.lower() == str(choice).lower():
                return choice
        raise _invalid(path, f"must be one of {', '.join(map(str, schema['enum']))}")
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        raise _invalid(path, f"must be at most {schema['maxLength']} characters")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise _invalid(path, f"must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise _invalid(path, f"must be at most {schema['maximum']}")
    if isinstance(value, dict):
        return _validate_object(schema, value, path)
    if isinstance(value, list) and "items" in schema:
        return [validate(schema["items"], item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def _validate_object(schema: dict, value: dict, path: str) -> dict:
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    result = {}
    for name, item in value.items():
        where = f"{path}.{name}" if path else name
        if name in properties:
            result[name] = validate(properties[name], item, where)
        elif extra is False:
            raise _invalid(where, "unknown field")
        elif isinstance(extra, dict):
            result[name] = validate(extra, item, where)
        else:
            result[name] = item
    for name in schema.get("required", ()):
        if name not in value:
            raise _invalid(f"{path}.{name}" if path else name, "is required")
    return result


def parse_query_value(schema: dict, text: str, name: str) -> Any:
    """A query-string value converted to the schema's type, then validated."""
    types = schema.get("type")
    if types == "integer":
        try:
            value: Any = int(text, 10)
        except ValueError:
            raise _invalid(name, "must be an integer") from None
    else:
        value = text
    return validate(schema, value, name)
