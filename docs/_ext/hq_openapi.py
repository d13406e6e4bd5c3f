"""The HTTP API page, generated from the server's OpenAPI document at build time.

The app is built the way ``hyperqueue serve`` builds it (``create_app`` with the metrics,
configuration and audit plugins, workers off), its OpenAPI document is rendered as
Markdown tables into ``reference/http`` (a ``source-read`` hook: no generated file sits
in the source tree), and the document itself is written next to the HTML as
``openapi.json``. So the page always says what the code serves.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from sphinx.application import Sphinx

PAGE = "reference/http"
_METHODS = ("get", "post", "put", "patch", "delete")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app ``hyperqueue serve`` runs."""
    import hyperqueue as hq
    from hyperqueue_litestar import Audit, Config, ConfigApi, MemoryAuditSink, Metrics, create_app

    queue = hq.Queue()
    app = create_app(
        queue,
        workers=False,
        plugins=[Metrics(queue), ConfigApi(queue, Config()), Audit(queue, MemoryAuditSink())],
    )
    document: dict[str, Any] = app.openapi_schema.to_schema()
    return document


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _anchor(name: str) -> str:
    return f"http-schema-{name.lower()}"


def _type(schema: dict[str, Any]) -> str:
    """A JSON schema as a short type: `string`, `integer` (1 to 1000), a link to a schema."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for combo in ("oneOf", "anyOf"):
        if combo in schema:
            parts = [_type(s) for s in schema[combo] if s.get("type") != "null"]
            nullable = any(s.get("type") == "null" for s in schema[combo])
            text = " or ".join(dict.fromkeys(parts)) or "null"
            return f"{text} or null" if nullable and parts else text
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        items = schema.get("items") or {}
        return f"array of {_type(items)}" if items else "array"
    if kind == "object" and "additionalProperties" in schema:
        values = schema["additionalProperties"]
        return f"object of {_type(values)}" if values else "object"
    return str(kind or "any")


def _bounds(schema: dict[str, Any]) -> str:
    notes = []
    for key, word in (
        ("minimum", ">="),
        ("maximum", "<="),
        ("minLength", "length >="),
        ("maxLength", "length <="),
        ("minItems", "items >="),
        ("maxItems", "items <="),
    ):
        if key in schema:
            value = schema[key]
            value = int(value) if isinstance(value, float) and value.is_integer() else value
            notes.append(f"{word} {value:,}" if isinstance(value, int) else f"{word} {value}")
    if "default" in schema:
        notes.append(f"default `{json.dumps(schema['default'])}`")
    return ", ".join(notes)


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### {method.upper()} `{path}`", ""]
    if op.get("summary"):
        lines += [_cell(op["summary"]) + ".", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    params = op.get("parameters") or []
    if params:
        lines += ["| parameter | in | type | required | bounds |", "|---|---|---|---|---|"]
        for p in params:
            schema = p.get("schema") or {}
            lines.append(
                f"| `{p['name']}` | {p['in']} | {_type(schema)} | "
                f"{'yes' if p.get('required') else 'no'} | {_bounds(schema)} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in (body.get("content") or {}).items():
            lines += [f"Body ({media}): {_type(content.get('schema') or {})}", ""]
    lines += ["| status | answer | body |", "|---|---|---|"]
    for status, answer in (op.get("responses") or {}).items():
        content = answer.get("content") or {}
        kinds = [
            _type(c.get("schema") or {}) if media == "application/json" else f"`{media}`"
            for media, c in content.items()
        ]
        lines.append(f"| {status} | {_cell(answer.get('description', ''))} | {', '.join(kinds)} |")
    return [*lines, ""]


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"({_anchor(name)})=", f"### {name}", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    properties = schema.get("properties") or {}
    if properties:
        required = set(schema.get("required") or ())
        lines += ["| field | type | required | bounds |", "|---|---|---|---|"]
        for field, sub in properties.items():
            lines.append(
                f"| `{field}` | {_type(sub)} | {'yes' if field in required else 'no'} "
                f"| {_bounds(sub)} |"
            )
    else:
        lines.append(f"Type: {_type(schema)}.")
    return [*lines, ""]


def render(document: dict[str, Any]) -> str:
    """The document as Markdown: the operations by tag, then the schemas."""
    by_tag: dict[str, list[str]] = {}
    for path, operations in document.get("paths", {}).items():
        for method in _METHODS:
            if method in operations:
                op = operations[method]
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).extend(_operation(method, path, op))
    lines = [""]
    for tag, section in by_tag.items():
        lines += [f"## {tag.capitalize()}", "", *section]
    lines += ["## Schemas", ""]
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines)


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    if docname == PAGE:
        source[0] += render(app.env.hq_openapi)  # type: ignore[attr-defined]


def _builder_inited(app: Sphinx) -> None:
    app.env.hq_openapi = openapi_document()  # type: ignore[attr-defined]


def _build_finished(app: Sphinx, exception: BaseException | None) -> None:
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "openapi.json"
        document = msgspec.json.encode(app.env.hq_openapi)  # type: ignore[attr-defined]
        target.write_bytes(msgspec.json.format(document, indent=2))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("builder-inited", _builder_inited)
    app.connect("source-read", _source_read)
    app.connect("build-finished", _build_finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
