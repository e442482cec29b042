"""Compose one string per catalogue item from its text fields.

A template such as ``"{title}. {category}. {description}"`` is split into
fields, each with the literal text in front of it. A missing or empty field
drops together with that literal, so no ``". ."`` or ``"nan"`` is left behind
and the default template works for catalogues that only have a title.
"""
from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping

import pandas as pd

DEFAULT_TEMPLATE = "{title}. {category}. {description}"
# Literal values that are really "missing" once a frame has been through astype(str).
_MISSING_STRINGS = {"nan", "NaN", "None", "<NA>", "NaT"}
# Characters stripped from a separator when nothing has been written before it.
_LEADING_SEPARATORS = " \t\n.,;:|/-–—"
_SPACES = re.compile(r"\s+")


def clean_value(value) -> str:
    """A field value as clean text: '' for None/NaN/'nan', lists joined by ', '."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (list, tuple, set)) or (hasattr(value, "tolist") and not isinstance(value, str)
                                                 and getattr(value, "ndim", 0) == 1):
        parts = (clean_value(v) for v in (value.tolist() if hasattr(value, "tolist") else value))
        return ", ".join(p for p in parts if p)
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    text = _SPACES.sub(" ", str(value)).strip()
    return "" if text in _MISSING_STRINGS else text


class ItemTextTemplate:
    """Render catalogue rows through a ``str.format``-style template, dropping empty fields."""

    def __init__(self, template: str = DEFAULT_TEMPLATE, max_chars: int | None = 512):
        self.template, self.max_chars = template, max_chars
        # [(literal before the field, field name, format spec)], plus the trailing literal.
        self._parts: list[tuple[str, str, str]] = []
        self._tail = ""
        for literal, name, spec, _conv in string.Formatter().parse(template):
            if name is None:
                self._tail += literal
            elif not name:
                raise ValueError(f"template fields must be named, got {template!r}")
            else:
                self._parts.append((self._tail + literal, name, spec or ""))
                self._tail = ""
        if not self._parts:
            raise ValueError(f"template has no {{field}}: {template!r}")

    @property
    def fields(self) -> list[str]:
        return [name for _, name, _ in self._parts]

    def render_row(self, row: Mapping) -> str:
        """Text for one item given its fields (missing keys count as empty)."""
        out = ""
        for literal, name, spec in self._parts:
            raw = row.get(name)
            value = clean_value(raw)
            if value and spec:
                try:
                    value = format(raw, spec)
                except (TypeError, ValueError):
                    pass
            if not value:
                continue  # the field and the separator in front of it vanish together
            if not out:
                literal = literal.lstrip(_LEADING_SEPARATORS) if literal[:1] in _LEADING_SEPARATORS else literal
            elif literal[:1] in ".,;:!?" and out.rstrip()[-1:] == literal[:1]:
                literal = literal[1:]  # "Title." + ". Drama" -> "Title. Drama", not "Title.. Drama"
            out += literal + value
        if out:
            out += self._tail
        out = _SPACES.sub(" ", out).strip()
        return self._truncate(out)

    def _truncate(self, text: str) -> str:
        if not self.max_chars or len(text) <= self.max_chars:
            return text
        cut = text[:self.max_chars]
        space = cut.rfind(" ")
        if space > self.max_chars // 2:  # prefer a word boundary when one is near
            cut = cut[:space]
        return cut.rstrip(_LEADING_SEPARATORS)

    def render(self, catalogue: pd.DataFrame) -> list[str]:
        """One text per catalogue row, in row order."""
        present = [f for f in dict.fromkeys(self.fields) if f in catalogue.columns]
        columns = [catalogue[f].tolist() for f in present]
        return [self.render_row(dict(zip(present, values))) for values in zip(*columns)] if present \
            else [""] * len(catalogue)

    def __repr__(self) -> str:
        return f"ItemTextTemplate({self.template!r}, max_chars={self.max_chars})"
