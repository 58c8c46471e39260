"""Server-sent events (the stream format of llama-server's completions), decoded from raw bytes: pure, no I/O.

Only edgekit.chat.client (the one llama-server client) reads streams; this is its parser, kept apart so it can be
tested byte by byte.
"""

from __future__ import annotations

import codecs
from typing import Iterator


def iter_sse(chunks: Iterator[bytes]) -> Iterator[tuple[str, str]]:
    """Server-sent events from raw byte chunks: yields (event field, data), e.g. ("data", '{"content": ..}').

    Bytes are decoded incrementally, so a multi-byte character split between chunks is never broken.
    llama-server writes `data: ...` lines, and `error: ...` when a streamed request fails.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    fields: dict[str, list[str]] = {}

    def lines(text: str) -> Iterator[str]:
        nonlocal buffer
        buffer += text
        while True:
            cut = min((i for i in (buffer.find("\n"), buffer.find("\r")) if i != -1), default=-1)
            if cut == -1:
                return
            line, rest = buffer[:cut], buffer[cut + 1:]
            if buffer[cut] == "\r" and rest.startswith("\n"):
                rest = rest[1:]
            elif buffer[cut] == "\r" and not rest:  # a lone \r at the end: wait to see if \n follows
                return
            buffer = rest
            yield line

    def feed(text: str) -> Iterator[tuple[str, str]]:
        for line in lines(text):
            if not line:
                for name, values in fields.items():
                    yield name, "\n".join(values)
                fields.clear()
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)

    for chunk in chunks:
        yield from feed(decoder.decode(chunk))
    yield from feed(decoder.decode(b"", final=True) + "\n\n")
