"""JSON Schema as Gemini accepts it: local `$ref`s inlined, nullable unions folded, and only
the keywords and formats its `Schema` type knows kept."""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "items", "minItems",
        "maxItems", "properties", "required", "minProperties", "maxProperties", "minLength",
        "maxLength", "pattern", "example", "anyOf", "propertyOrdering", "default", "minimum",
        "maximum",
    }
)  # fmt: skip
_FORMATS = {
    "string": {"enum", "date-time"},
    "number": {"float", "double"},
    "integer": {"int32", "int64"},
}
_MAX_REF_DEPTH = 8


def _resolve_ref(ref: Any, defs: JSON) -> JSON | None:
    if not isinstance(ref, str):
        return None
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            target = defs.get(ref[len(prefix) :])
            return target if isinstance(target, dict) else None
    return None


def _clean(schema: Any, defs: JSON, depth: int) -> JSON:
    if not isinstance(schema, dict):
        return {}
    if "$ref" in schema:
        target = _resolve_ref(schema["$ref"], defs)
        if target is None or depth >= _MAX_REF_DEPTH:
            # A recursive or external reference cannot be inlined: accept any object.
            return {"type": "object"}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _clean(merged, defs, depth + 1)
    out: JSON = {}
    typ = schema.get("type")
    if isinstance(typ, list):
        kinds = [t for t in typ if isinstance(t, str) and t != "null"]
        if len(kinds) < len(typ):
            out["nullable"] = True
        if len(kinds) == 1:
            typ = kinds[0]
        else:
            out["anyOf"] = [{"type": t} for t in kinds]
            typ = None
    if isinstance(typ, str):
        out["type"] = typ
    branches = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(branches, list):
        kept = []
        for b in branches:
            if isinstance(b, dict) and b.get("type") == "null":
                out["nullable"] = True
            else:
                kept.append(_clean(b, defs, depth))
        if len(kept) == 1:
            out.update({k: v for k, v in kept[0].items() if k not in out})
        elif kept:
            out["anyOf"] = kept
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        for b in all_of:
            for k, v in _clean(b, defs, depth).items():
                out.setdefault(k, v)
    if "const" in schema and isinstance(schema["const"], str):
        out["enum"] = [schema["const"]]
    for key, value in schema.items():
        if key not in _SCHEMA_KEYS or key in out or key in ("type", "anyOf"):
            continue
        if key == "properties" and isinstance(value, dict):
            if value:
                out[key] = {str(k): _clean(v, defs, depth) for k, v in value.items()}
        elif key == "items":
            out[key] = _clean(value, defs, depth)
        elif key == "enum":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[key] = value
        elif key == "format":
            if isinstance(value, str) and value in _FORMATS.get(
                str(out.get("type", "")).lower(), ()
            ):
                out[key] = value
        elif key == "required":
            props = out.get("properties") or schema.get("properties")
            if not isinstance(props, dict):
                props = {}
            if isinstance(value, list):
                req = [r for r in value if isinstance(r, str) and r in props]
                if req:
                    out[key] = req
        else:
            out[key] = value
    return out


def clean_schema(schema: JSON) -> JSON:
    """A JSON schema reduced to the OpenAPI subset Gemini accepts.

    Local `$ref`s are inlined, `["x", "null"]` types become `nullable`, `oneOf` becomes `anyOf`,
    and keys Gemini rejects (`$schema`, `additionalProperties`, unsupported formats, ...) go.
    """
    defs: JSON = {}
    for key in ("$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            defs.update(schema[key])
    return _clean(schema, defs, 0)


# ---- request ---------------------------------------------------------------------------------
