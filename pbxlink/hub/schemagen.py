"""The popup protocol's JSON Schemas (`schemas/*.json`), generated from the Structs that the
desk builds and the hub decodes, so a page author's contract is the code's own declaration.

    python -m pbxlink.hub.schemagen     # write them again after changing a message

tests/test_hub.py checks that the committed files are what this makes. Each message and the
card is a file of its own, `$id` `urn:pbxlink:hub:v1:<file>`, and refers to the others by
that `$id`; the objects only one file uses (a card's client, its orders) are that file's
`$defs`. `common.json` holds the shared definitions for a page's own schemas.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from pbxlink.desk import messages as m
from pbxlink.hub.messages import Hello

DRAFT = "https://json-schema.org/draft/2020-12/schema"
URN = "urn:pbxlink:hub:v1:"
FOLDER = Path(__file__).parent / "schemas"

#: file name (without .json) -> the Struct it declares
FILES: dict[str, type[msgspec.Struct]] = {
    "hello": Hello,
    "welcome": m.Welcome,
    "ringing": m.Ringing,
    "answered": m.Answered,
    "transferred": m.Transferred,
    "ended": m.Ended,
    "missed": m.Missed,
    "too_long": m.TooLong,
    "client_updated": m.ClientUpdated,
    "card": m.Card,
}
#: the definitions the messages share, under the names a page's schema refers to
COMMON: dict[str, Any] = {
    "v": m.Version,
    "time": m.Time,
    "call_id": m.CallId,
    "extension": m.Extension,
    "status": m.Status,
    "seconds": m.Seconds,
}
LOCAL = "#/$defs/"


def schemas() -> dict[str, dict[str, Any]]:
    """file name -> its schema: every file of FILES, `server` (any server message) and
    `common`."""
    types = [*FILES.values(), m.ServerMessage]
    (*_, server), components = msgspec.json.schema_components(types, ref_template=LOCAL + "{name}")
    own_file = {cls.__name__: name for name, cls in FILES.items()}
    out = {
        name: _file(name, components[cls.__name__], components, own_file)
        for name, cls in FILES.items()
    }
    about = "Any message the hub sends (v1); a page must ignore types it does not know"
    out["server"] = _file(
        "server", {"title": "ServerMessage", "description": about, **server}, components, own_file
    )
    common = {name: msgspec.json.schema(t) for name, t in COMMON.items()}
    out["common"] = {
        "$schema": DRAFT,
        "$id": URN + "common",
        "title": "Definitions the popup protocol's messages share, for a page's own schemas",
        "$defs": common,
    }
    return out


def _file(
    name: str, root: dict[str, Any], components: dict[str, Any], own_file: dict[str, str]
) -> dict[str, Any]:
    """`root` as file `name`: refs to a component with a file of its own point at that file,
    the rest are copied into this file's `$defs`. Every property is required: the hub writes
    every field, defaults and nulls included."""
    body = copy.deepcopy(root)
    defs: dict[str, Any] = {}
    pending = [body]
    while pending:
        schema = pending.pop()
        for holder, key, ref in list(_refs(schema)):
            component = ref.removeprefix(LOCAL)
            if component in own_file:
                holder[key] = URN + own_file[component]
            elif component not in defs:
                defs[component] = copy.deepcopy(components[component])
                pending.append(defs[component])
    for schema in (body, *defs.values()):
        _tidy(schema)
    out = {"$schema": DRAFT, "$id": URN + name, **body}
    if defs:
        out["$defs"] = dict(sorted(defs.items()))
    return out


def _refs(node: Any) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(holder, key, ref) of every `$ref` and discriminator mapping under `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield node, key, value
            elif key == "discriminator":
                mapping = value["mapping"]
                yield from ((mapping, tag, ref) for tag, ref in mapping.items())
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _tidy(node: Any) -> None:
    """Every property required (the hub writes every field, defaults and nulls included);
    descriptions unwrapped (they are docstrings, wrapped for the source)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node["required"] = list(node["properties"])
        if isinstance(node.get("description"), str):
            node["description"] = " ".join(node["description"].split())
        for value in node.values():
            _tidy(value)
    elif isinstance(node, list):
        for value in node:
            _tidy(value)


def text(schema: dict[str, Any]) -> str:
    """A schema file's text, as committed."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(folder: Path = FOLDER) -> list[Path]:
    """Write every schema file into `folder`; the paths written."""
    written = []
    for name, schema in schemas().items():
        path = folder / f"{name}.json"
        path.write_text(text(schema), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else FOLDER):
        print(path)
