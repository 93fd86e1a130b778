"""The ingest stage: any MovieLens edition and a poster folder -> canonical typed tables.

Writes ``items``, ``users``, ``ratings``, ``tags`` and ``rejects`` (stage "ingest") into the
store, all committed together at the end. ``ingest`` (and with it polars) is imported the first
time it is asked for, so commands that only name ``IngestSettings`` (every one, through the CLI)
do not load polars.
"""

from bonmf_pipe import lazy
from bonmf_pipe.pipeline.ingest.formats import DATASET_CHOICES, EDITIONS, detect_edition
from bonmf_pipe.pipeline.ingest.settings import DEFAULT_TEXT_TEMPLATE, FileStats, IngestSettings, IngestSummary
from bonmf_pipe.pipeline.ingest.text import render_text

__all__ = [
    "DATASET_CHOICES",
    "DEFAULT_TEXT_TEMPLATE",
    "EDITIONS",
    "FileStats",
    "IngestSettings",
    "IngestSummary",
    "detect_edition",
    "ingest",
    "render_text",
]

__getattr__, __dir__ = lazy.exports(__name__, {"ingest": "stage"})
