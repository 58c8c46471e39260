"""Prometheus text exposition format 0.0.4: a writer (families -> text) and a parser (text -> families).

The writer checks names and escapes everything it prints: label values (backslash, double quote, newline) and
HELP text (backslash, newline); values are Go-float spellings (NaN, +Inf, -Inf). Each family appears once, HELP
and TYPE before its samples. The parser reads another exporter's text (llama-server's /metrics) for re-export;
it keeps HELP and TYPE, and raises ParseError (a ValueError) on a line it cannot read.
"""

from __future__ import annotations

import math
import re
from typing import Dict, Iterable, List, Optional, Tuple

from edgekit.errors import ParseError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
# sample-name suffixes that belong to a histogram or summary family
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count", "_created"), "summary": ("_sum", "_count", "_created"),
             "counter": ("_created",)}

Labels = Dict[str, str]


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Family:
    """One metric family: name, type, help and its samples (sample name suffix, labels, value)."""

    def __init__(self, name: str, kind: str, help_text: str):
        if not METRIC_NAME.match(name):
            raise ValueError(f"not a metric name: {name!r}")
        if kind not in TYPES:
            raise ValueError(f"not a metric type: {kind!r}")
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: List[Tuple[str, Labels, float]] = []

    def add(self, value: Optional[float], labels: Optional[Labels] = None, suffix: str = "") -> "Family":
        """Add one sample; a None value (the source does not know it) adds nothing."""
        if value is None:
            return self
        for key in labels or {}:
            if not LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"not a label name: {key!r} (on {self.name})")
        self.samples.append((suffix, dict(labels or {}), float(value)))
        return self

    def render(self) -> List[str]:
        lines = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for suffix, labels, value in self.samples:
            text = ",".join(f'{k}="{escape_label_value(str(v))}"' for k, v in labels.items())
            lines.append(f"{self.name}{suffix}{{{text}}} {format_value(value)}" if text
                         else f"{self.name}{suffix} {format_value(value)}")
        return lines


class Exposition:
    """The families of one scrape, in the order they were first asked for; each name once."""

    def __init__(self) -> None:
        self._families: Dict[str, Family] = {}

    def family(self, name: str, kind: str, help_text: str) -> Family:
        have = self._families.get(name)
        if have is None:
            have = self._families[name] = Family(name, kind, help_text)
        elif have.kind != kind:
            raise ValueError(f"{name} is a {have.kind}, not a {kind}")
        return have

    def gauge(self, name: str, help_text: str) -> Family:
        return self.family(name, "gauge", help_text)

    def counter(self, name: str, help_text: str) -> Family:
        return self.family(name, "counter", help_text)

    def merge(self, families: Iterable[Family], extra: Labels) -> None:
        """Add parsed families with `extra` labels on every sample (a clash keeps theirs as exported_<name>)."""
        for fam in families:
            mine = self.family(fam.name, fam.kind, fam.help)
            for suffix, labels, value in fam.samples:
                merged = {}
                for key, val in labels.items():
                    merged[f"exported_{key}" if key in extra else key] = val
                merged.update(extra)
                mine.add(value, merged, suffix)

    def names(self) -> List[str]:
        return [name for name, fam in self._families.items() if fam.samples]

    def render(self) -> str:
        lines: List[str] = []
        for fam in self._families.values():
            if fam.samples:                          # a family nobody measured is left out, never zero-filled
                lines += fam.render()
        return "\n".join(lines) + "\n" if lines else ""


# -- parsing another exporter's text -------------------------------------------------------------------------
def _unescape(text: str, quote: bool) -> str:
    """Undo the format's escaping: \\\\ and \\n everywhere, \\" in label values only."""
    table = {"\\": "\\", "n": "\n", '"': '"'} if quote else {"\\": "\\", "n": "\n"}
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in table:
            out.append(table[text[i + 1]])
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


_LABEL_START = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*\"")


def _labels(text: str, line: str) -> Labels:
    """`a="x",b="y\\"z"` -> dict (the text between the braces)."""
    labels: Labels = {}
    i = 0
    while i < len(text):
        while i < len(text) and text[i] in " ,":
            i += 1
        if i >= len(text):
            break
        m = _LABEL_START.match(text, i)
        if not m:
            raise ParseError(f"bad labels in {line!r}")
        i, value = m.end(), []
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                value.append(text[i:i + 2])
                i += 2
            else:
                value.append(text[i])
                i += 1
        if i >= len(text):
            raise ParseError(f"unterminated label value in {line!r}")
        labels[m.group(1)] = _unescape("".join(value), quote=True)
        i += 1
    return labels


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?\s*$")


def parse(text: str) -> List[Family]:
    """Text format 0.0.4 -> families with their samples (HELP/TYPE kept; an undeclared sample is untyped);
    ParseError (a ValueError) names the first line it cannot read."""
    try:
        return _parse(text)
    except ParseError:
        raise
    except ValueError as e:                           # a name or label Family refuses
        raise ParseError(str(e)) from None


def _parse(text: str) -> List[Family]:
    families: Dict[str, Family] = {}
    helps: Dict[str, str] = {}

    def owner(name: str) -> Family:
        if name in families:
            return families[name]
        for fam in families.values():
            if name.startswith(fam.name) and name[len(fam.name):] in _SUFFIXES.get(fam.kind, ()):
                return fam
        families[name] = Family(name, "untyped", helps.get(name, ""))
        return families[name]

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].strip().split(None, 2)
            if len(parts) >= 2 and parts[0] == "HELP":
                helps[parts[1]] = _unescape(parts[2] if len(parts) > 2 else "", quote=False)
                if parts[1] in families:
                    families[parts[1]].help = helps[parts[1]]
            elif len(parts) == 3 and parts[0] == "TYPE":
                name, kind = parts[1], parts[2].strip()
                if kind not in TYPES:
                    raise ParseError(f"unknown type in {line!r}")
                if name in families and families[name].samples:
                    raise ParseError(f"TYPE after samples of {name}")
                families[name] = Family(name, kind, helps.get(name, ""))
            continue                                  # any other comment
        m = _SAMPLE.match(line)
        if not m:
            raise ParseError(f"not a sample line: {line!r}")
        name, label_text, value = m.group(1), m.group(2), m.group(3)
        try:
            number = float(value)                     # also 'NaN', '+Inf', 'inf' (C++ streams print lower case)
        except ValueError:
            raise ParseError(f"bad value in {line!r}") from None
        fam = owner(name)
        fam.add(number, _labels(label_text or "", line), name[len(fam.name):])
    return list(families.values())
