"""JSON documents of a usage export file: one page, pages back to back, JSONL, or a JSON array of pages.

People save API pages the way their script wrote them: `curl ... >> usage.json` appends pretty-printed
pages, a paging loop writes one page per line, an export tool writes an array. All of these are read,
each document tagged with the line it starts on so that an error can name it. Usage exports are small (a
year of daily buckets grouped by project, key and model is a few MB), so a file is read whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from distillguard.ingest.base import open_bytes


@dataclass(slots=True)
class Document:
    """One top-level JSON value (a page), or why the text at `line` is not one."""

    line: int
    value: Any = None
    error: str | None = None
    raw: bytes | None = None


_WS = " \t\r\n"


def documents(path: Path) -> Iterator[Document]:
    """Top-level JSON documents of `path` (gzip and zstd are read as they are); a top-level array is
    flattened into its elements, all tagged with the array's line."""
    with open_bytes(path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        yield Document(line, error=f"not valid UTF-8 (byte {e.start})", raw=data[e.start : e.start + 200])
        return
    fast = _fast_documents(data)
    if fast is not None:
        yield from fast
        return
    dec = json.JSONDecoder()
    pos, line, n = 0, 1, len(text)
    while True:
        start = pos
        while pos < n and text[pos] in _WS:
            pos += 1
        line += text.count("\n", start, pos)
        if pos >= n:
            return
        try:
            value, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            # Resume at the next line that starts a document at column 0 (how JSONL and appended
            # pretty-printed pages both lay pages out); what lies between is one bad document.
            nxt = text.find("\n{", e.pos)
            end = n if nxt < 0 else nxt + 1
            # (the decoder was given the whole text, so e.lineno is already the file's line)
            yield Document(
                line,
                error=f"invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})",
                raw=text[pos:end][:4096].encode(),
            )
        else:
            if isinstance(value, list):
                for v in value:
                    yield Document(line, v)
            else:
                yield Document(line, value)
        line += text.count("\n", pos, end)
        pos = end


def _fast_documents(data: bytes) -> list[Document] | None:
    """The documents of a file that is one JSON value or clean JSONL, parsed with orjson (several times
    faster than the standard library); None when neither (then the general reader takes over)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        return [Document(1, v) for v in value] if isinstance(value, list) else [Document(1, value)]
    out: list[Document] = []
    for i, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                return None
            out.extend(Document(i, v) for v in (value if isinstance(value, list) else [value]))
    return out
