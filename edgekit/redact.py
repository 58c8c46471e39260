"""Keep secrets out of what edgekit writes and prints (bench results, -v traces of remote commands): one function,
`redact`, used for all.

A secret is: the value after a flag or a field named like a key, token, password or secret (`--api-key K`,
`--hf-token=T`, `-hft T`, `"api_key": "K"`, `HF_TOKEN=T`, `?token=T`), an Authorization header or Bearer token,
a Hugging Face token (`hf_...`), the password in a URL (`http://user:PASS@host`), and any secret the caller
knows by value (the API key in use). Names of files holding a secret (`--api-key-file PATH`) are kept: only
the path is there, the file is never read. Numbers are kept (`j_per_token` is a measurement).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional

MASK = "<redacted>"

_SECRET_WORDS = ("key", "keys", "apikey", "token", "password", "passwd", "passphrase", "secret", "authorization",
                 "credential", "credentials", "cookie")
_SECRET_FLAGS = {"-hft"}                       # llama.cpp's short form of --hf-token
_SECRET_ENDINGS = ("apikey", "accesskey", "privatekey", "token", "password", "secret")   # hftoken, not monkey
_NOT_SECRET_ENDINGS = ("file", "path", "dir")   # --api-key-file PATH names where a secret is, not the secret

# candidates only: a name with a secret word in it (is_secret_name decides; _AUTH does Authorization), so that
# no other name's match can swallow the text after it (`--port --api-key K`, `http://u:p@h/?token=T`)
_WORDY = r"[\w.-]*?(?:key|token|passw|secret|credential|cookie)[\w.-]*"
_FLAG = re.compile(r"(?i)(?<![\w-])(-hft|--?(?=[a-z])" + _WORDY + r")(=|[ \t]+)(\"[^\"]*\"|'[^']*'|[^\s\"',;]+)")
_NAMED = re.compile(r"(?i)(?<![\w-])((?=[a-z_])" + _WORDY + r")([\"']?[ \t]*(?:=|:(?!//))[ \t]*[\"']?)"
                    r"([^\s\"',;&}\]]+)")
_AUTH = re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?[ \t]*[:=][ \t]*[\"']?)(?:(bearer|basic|token)[ \t]+)?"
                   r"([^\s\"',;}]+)")
_BEARER = re.compile(r"(?i)\b(bearer)[ \t]+(?!<redacted>)[A-Za-z0-9._~+/=-]+")
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@")


def is_secret_name(name: str) -> bool:
    """Pure: does a flag, field or variable with this name hold a secret? (`--api-key` yes, `--api-key-file` no)"""
    lower = name.lower().lstrip("-")
    if name.lower() in _SECRET_FLAGS:
        return True
    words = [w for w in re.split(r"[^a-z0-9]+", lower) if w]
    if not words or words[-1] in _NOT_SECRET_ENDINGS:
        return False
    return any(w in _SECRET_WORDS or w.endswith(_SECRET_ENDINGS) for w in words)


def redact(value: Any, known: Iterable[Optional[str]] = ()) -> Any:
    """A copy of value (dicts, lists, strings, numbers) with every secret replaced by <redacted>."""
    secrets = sorted({k for k in known if k and len(k) >= 4}, key=len, reverse=True)

    def text(s: str) -> str:
        for secret in secrets:
            s = s.replace(secret, MASK)
        s = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", s)
        s = _AUTH.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, s)
        s = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", s)
        s = _HF_TOKEN.sub(MASK, s)
        s = _FLAG.sub(lambda m: m.group(1) + m.group(2) + MASK if is_secret_name(m.group(1)) else m.group(0), s)
        return _NAMED.sub(lambda m: m.group(1) + m.group(2) + MASK if is_secret_name(m.group(1)) else m.group(0), s)

    def argv(items: list) -> list:
        out, hide_next = [], False
        for item in items:
            if hide_next:
                out.append(MASK)
                hide_next = False
                continue
            name, eq, _ = item.partition("=")
            if item.startswith("-") and is_secret_name(name):
                if eq:
                    out.append(f"{name}={MASK}")
                    continue
                hide_next = True
            out.append(text(item))
        return out

    def walk(v: Any, secret: bool) -> Any:
        if isinstance(v, dict):
            return {k: walk(x, secret or is_secret_name(str(k))) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            if v and all(isinstance(x, str) for x in v) and not secret:
                return argv(list(v))
            return [walk(x, secret) for x in v]
        if isinstance(v, str):
            return MASK if secret and v else text(v)
        return v

    return walk(value, False)
