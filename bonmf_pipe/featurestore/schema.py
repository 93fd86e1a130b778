"""Typed Arrow schemas of the canonical tables. Every table is keyed by item_id / user_id."""

from __future__ import annotations

import pyarrow as pa

ITEMS = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("title", pa.string(), nullable=False),  # without the trailing "(Year)"
        pa.field("year", pa.int32()),
        pa.field("genres", pa.list_(pa.string())),
        pa.field("tags", pa.list_(pa.string())),  # distinct tags, most applied first
        pa.field("text", pa.string(), nullable=False),  # encoder input, from the text template
        pa.field("poster_path", pa.string()),  # absolute path; null when no usable poster
        pa.field("poster_sha256", pa.string()),
        pa.field("poster_width", pa.int32()),
        pa.field("poster_height", pa.int32()),
        pa.field("imdb_id", pa.string()),  # "tt0114709"
        pa.field("tmdb_id", pa.int64()),
    ]
)

USERS = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("gender", pa.string()),
        pa.field("age", pa.int32()),  # ml-100k: years; ml-1m: age-group code (1, 18, 25, ...)
        pa.field("occupation", pa.int32()),  # edition-specific code (ml-1m 0..20; ml-100k u.occupation index)
        pa.field("zip_code", pa.string()),
        pa.field("occupation_name", pa.string()),  # "programmer", "technician/engineer": comparable across editions
    ]
)

RATINGS = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("rating", pa.float32(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),
    ]
)

REJECTS = pa.schema(
    [
        pa.field("stage", pa.string(), nullable=False),  # "ingest", "encode"
        pa.field("source", pa.string(), nullable=False),  # the file the row came from
        pa.field("line", pa.int64()),  # 1-based line number; null for whole files (posters)
        pa.field("raw", pa.string()),  # the raw text (truncated to 500 chars)
        pa.field("reason", pa.string(), nullable=False),
    ]
)

TAGS = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("tag", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64()),
    ]
)


def feature_schema(dim: int, dtype: str = "float16") -> pa.Schema:
    """Schema of a feature shard: one vector per (item_id, content_hash)."""
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema(
        [
            pa.field("item_id", pa.int64(), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("vector", pa.list_(value, dim), nullable=False),
        ]
    )
