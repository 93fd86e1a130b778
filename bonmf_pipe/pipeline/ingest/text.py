"""Render an item's encoder text from the template, dropping the parts that would be empty.

Placeholders: ``{title}``, ``{year}``, ``{genres}`` (joined by ", ") and ``{tags}`` (the most
applied first, joined by ", "). The template is cut into sentences after each ". "; a
parenthesised group whose placeholders are all empty is removed, then a sentence that still
has an empty placeholder is dropped, except the one holding ``{title}``, which loses its
trailing separators instead. With the default template::

    "Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun."
    "Babylon 5. Genres: Sci-Fi."                       (no year, no tags)
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from bonmf_pipe.errors import ConfigError

FIELDS = ("title", "year", "genres", "tags")
_SENTENCE_END = re.compile(r"(?<=\.)\s+")
_GROUP = re.compile(r"\s*\([^()]*\)")
_DANGLING = re.compile(r"[\s,:;-]+(?=\.?$)")


def template_fields(template: str) -> list[str]:
    """The placeholders of ``template``; a ConfigError for unknown ones or bad syntax."""
    try:
        names = [name for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"text template {template!r}: {exc}. Use placeholders like {{title}}.") from exc
    unknown = [n for n in names if n not in FIELDS]
    if unknown or "" in names:
        raise ConfigError(
            f"text template {template!r} uses {', '.join(repr(n) for n in unknown) or 'a bare {}'}; "
            f"the placeholders are {', '.join('{' + f + '}' for f in FIELDS)}."
        )
    if "title" not in names:
        raise ConfigError(f"text template {template!r} has no {{title}}: every item text needs the title.")
    return names


def render_text(template: str, title: str, year: int | None, genres: Sequence[str], tags: Sequence[str]) -> str:
    values = {
        "title": title.strip(),
        "year": "" if year is None else str(year),
        "genres": ", ".join(genres),
        "tags": ", ".join(tags),
    }
    kept = []
    for sentence in _SENTENCE_END.split(template.strip()):
        sentence = _GROUP.sub(lambda m: _group_or_empty(m.group(0), values), sentence)
        names = _names(sentence)
        if all(values[n] for n in names):
            kept.append(sentence.format(**values))
        elif "title" in names:  # the title's sentence stays; dangling separators go
            kept.append(_DANGLING.sub("", sentence.format(**values)))
    return " ".join(s.strip() for s in kept if s.strip())


def _names(fragment: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(fragment) if name]


def _group_or_empty(group: str, values: dict[str, str]) -> str:
    names = _names(group)
    return "" if names and not any(values[n] for n in names) else group
