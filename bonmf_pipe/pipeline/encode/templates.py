"""Texts of a template set (``encode --name NAME --text-template TEMPLATE``), rendered per item.

A template names items columns (``{title}``, ``{year}``, ``{genres}``, ``{tags}``, ``{text}``
(ingest's own rendered text), ``{imdb_id}``, ... : every text, number or list column but the
id and the poster's), each seen as text: lists ", "-joined, NULL as "". The template is cut
into sentences after each ". "; a parenthesised group whose placeholders are all empty is
removed, then every sentence that still has an empty placeholder is dropped (ingest's rule,
without its exception for the title). An item whose text comes out empty gets no vector: it
is an encode reject ("renders empty"), retried when one of its fields changes.

``"{tags}"`` for a movie tagged "pixar, fun" is ``"pixar, fun"``; for an untagged one, empty.
``"{title}. Tags: {tags}."`` is ``"Toy Story. Tags: pixar, fun."`` / ``"Heat."``.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from bonmf_pipe.featurestore.features import template_inputs
from bonmf_pipe.featurestore.store import Store

# Bump when the rendering rules change: part of a template set's encoder key.
TEMPLATE_RULES = 1
_SENTENCE_END = re.compile(r"(?<=\.)\s+")
_GROUP = re.compile(r"\s*\([^()]*\)")


def render(template: str, values: Mapping[str, str]) -> str:
    """The template's text for one item (empty when every sentence has an empty placeholder)."""
    kept = []
    for sentence in _SENTENCE_END.split(template.strip()):
        sentence = _GROUP.sub(lambda m: _group_or_empty(m.group(0), values), sentence)
        if all(values[n].strip() for n in _names(sentence)):
            kept.append(sentence.format(**values).strip())
    return " ".join(s for s in kept if s)


def template_texts(store: Store, template: str) -> tuple[pa.Table, pa.Table]:
    """(inputs, empty): (item_id, content_hash, input) of the items whose text is not empty, and
    (item_id, content_hash) of those whose text is, both by item id."""
    table = template_inputs(store, template)
    fields = [c for c in table.column_names if c not in ("item_id", "content_hash")]
    columns = [table.column(f).to_pylist() for f in fields]
    texts = [render(template, dict(zip(fields, row, strict=True))) for row in zip(*columns, strict=True)]
    full = pa.table({"item_id": table.column("item_id"), "content_hash": table.column("content_hash"),
                     "input": pa.array(texts, pa.string())})
    filled = pa.array([bool(t) for t in texts], pa.bool_())
    empty = full.filter(pc.invert(filled)).select(["item_id", "content_hash"])
    return full.filter(filled), empty


def _names(fragment: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(fragment) if name]


def _group_or_empty(group: str, values: Mapping[str, str]) -> str:
    names = _names(group)
    return "" if names and not any(values[n].strip() for n in names) else group
