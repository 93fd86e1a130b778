"""Write the synthetic sample in the exact file format of one MovieLens edition.

- ``ml-latest-small``: ``movies.csv``, ``links.csv``, ``ratings.csv``, ``tags.csv``: UTF-8,
  a header line, CRLF line ends (as GroupLens ships them), fields quoted only when they hold
  a comma or a quote; ratings in half stars ``0.5..5.0`` written with one decimal.
- ``ml-1m``: ``movies.dat``, ``users.dat``, ``ratings.dat``: ``::``-separated, latin-1, LF,
  whole-star ratings ``1..5``; ratings grouped by user, by time within a user.
- ``ml-100k``: ``u.data`` (tab-separated, in no particular order), ``u.item`` (``|``,
  latin-1, title, release date, empty video date, IMDb URL, 19 genre flags), ``u.user``,
  ``u.genre``, ``u.occupation``, ``u.info``.

The catalogue files are small and written at once; the ratings (and tags) are appended
block by block as frames through polars' CSV writer, which is what keeps the writing fast.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import quote

import numpy as np

from bonmf_pipe.pipeline.ingest.formats import GENRES_100K, OCCUPATIONS_100K
from bonmf_pipe.pipeline.sample.latent import STREAM_USERS, LatentModel, Period, RatingBlock, rng_for
from bonmf_pipe.pipeline.sample.text import spell_genre, tag_words

AGE_GROUPS_1M = (1, 18, 25, 35, 45, 50, 56)
AGE_WEIGHTS_1M = (0.04, 0.18, 0.35, 0.2, 0.09, 0.08, 0.06)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class EditionSpec:
    """What differs between the editions the sampler writes."""

    name: str
    period: Period  # rating timestamps and movie years
    mean: float  # global mean rating of the model before rounding
    half_stars: bool  # 0.5..5 in half steps, else 1..5
    id_gap_rate: float  # share of movie ids followed by a gap (real MovieLens ids are not dense)
    catalogue: tuple[str, ...]  # files written at once
    ratings_file: str
    tags_file: str | None = None


EDITIONS: dict[str, EditionSpec] = {
    "ml-latest-small": EditionSpec(
        "ml-latest-small", Period(828124615, 1537799250, 1902, 2018), 3.45, True, 0.15,
        ("movies.csv", "links.csv", "README.txt"), "ratings.csv", "tags.csv",
    ),
    "ml-1m": EditionSpec(
        "ml-1m", Period(956703932, 1046454590, 1919, 2000), 3.55, False, 0.02,
        ("movies.dat", "users.dat", "README"), "ratings.dat",
    ),
    "ml-100k": EditionSpec(
        "ml-100k", Period(874724710, 893286638, 1922, 1998), 3.5, False, 0.0,
        ("u.item", "u.user", "u.genre", "u.occupation", "u.info", "README"), "u.data",
    ),
}


@dataclass
class Catalogue:
    """Per-item and per-user values shared by every file of a sample."""

    item_ids: np.ndarray  # int64 movie ids, increasing, with gaps
    titles: list[str]  # "Title (Year)"
    genres: list[list[str]]  # ml-1m spelling
    model: LatentModel
    seed: int
    tag_rate: float = 0.0


def item_ids(rng: np.random.Generator, items: int, gap_rate: float) -> np.ndarray:
    """Increasing movie ids starting at 1, with a gap of 1..30 after ``gap_rate`` of them."""
    gaps = np.where(rng.random(items) < gap_rate, rng.integers(1, 31, items), 0)
    gaps[0] = 0
    return 1 + np.arange(items) + np.cumsum(gaps)


def rating_values(block: RatingBlock, half_stars: bool) -> np.ndarray:
    """Round scores to the edition's scale; half-star editions use whole stars 60% of the time
    (as MovieLens users do)."""
    whole = np.clip(np.rint(block.score), 1, 5)
    if not half_stars:
        return whole.astype(np.int64)
    half = np.clip(np.rint(block.score * 2) / 2, 0.5, 5)
    return np.where(block.rng.random(len(block.score)) < 0.6, whole, half)


# -- catalogue files -------------------------------------------------------------------------


def _text(fh: BinaryIO, encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(fh, encoding=encoding, newline="", write_through=True)


def write_movies_csv(fh: BinaryIO, cat: Catalogue) -> None:
    out = _text(fh, "utf-8")
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(("movieId", "title", "genres"))
    for i, title, genres in zip(cat.item_ids.tolist(), cat.titles, cat.genres, strict=True):
        w.writerow((i, title, "|".join(spell_genre(g, "ml-latest-small") for g in genres)))
    out.detach()


def write_links_csv(fh: BinaryIO, cat: Catalogue) -> None:
    """``movieId,imdbId,tmdbId``: 7-digit IMDb ids, TMDb id empty for about one movie in 500."""
    imdb = 100000 + cat.item_ids * 37 % 9_000_000
    tmdb = (cat.item_ids * 7 + 11).tolist()
    out = _text(fh, "utf-8")
    out.write("movieId,imdbId,tmdbId\r\n")
    for i, m, t in zip(cat.item_ids.tolist(), imdb.tolist(), tmdb, strict=True):
        out.write(f"{i},{m:07d},{'' if i % 500 == 499 else t}\r\n")
    out.detach()


def write_movies_dat(fh: BinaryIO, cat: Catalogue) -> None:
    lines = (f"{i}::{t}::{'|'.join(g)}\n" for i, t, g in zip(cat.item_ids.tolist(), cat.titles, cat.genres, strict=True))
    fh.write("".join(lines).encode("latin-1"))


def _demographics(cat: Catalogue) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gender, age (ml-1m code), occupation index, zip: seeded noise, no signal."""
    rng = rng_for(cat.seed, STREAM_USERS, 1)
    n = cat.model.users
    gender = np.where(rng.random(n) < 0.72, "M", "F")
    age = rng.choice(AGE_GROUPS_1M, size=n, p=AGE_WEIGHTS_1M)
    occupation = rng.integers(0, 21, n)
    zips = rng.integers(1000, 99999, n)
    return gender, age, occupation, zips


def write_users_dat(fh: BinaryIO, cat: Catalogue) -> None:
    gender, age, occ, zips = _demographics(cat)
    lines = (f"{u + 1}::{g}::{a}::{o}::{z:05d}\n" for u, (g, a, o, z) in enumerate(zip(gender, age, occ, zips, strict=True)))
    fh.write("".join(lines).encode("latin-1"))


def write_u_item(fh: BinaryIO, cat: Catalogue) -> None:
    """``id|title|01-Jan-1995||http://us.imdb.com/M/title-exact?...|<19 genre flags>``."""
    release = cat.model.item_release
    lines = []
    for k, (i, title, genres) in enumerate(zip(cat.item_ids.tolist(), cat.titles, cat.genres, strict=True)):
        day = np.datetime64(int(release[k]), "s").astype("datetime64[D]").item()
        date = f"{day.day:02d}-{MONTHS[day.month - 1]}-{day.year}"
        url = "http://us.imdb.com/M/title-exact?" + quote(title, safe="(),'")
        flags = "|".join("1" if g in genres else "0" for g in GENRES_100K)
        lines.append(f"{i}|{title}|{date}||{url}|{flags}\n")
    fh.write("".join(lines).encode("latin-1"))


def write_u_user(fh: BinaryIO, cat: Catalogue) -> None:
    gender, age_code, occ, zips = _demographics(cat)
    years = np.clip(age_code + (np.arange(len(age_code)) * 7 % 9), 7, 73)  # an age within the group
    lines = (
        f"{u + 1}|{a}|{g}|{OCCUPATIONS_100K[o]}|{z:05d}\n"
        for u, (g, a, o, z) in enumerate(zip(gender, years.tolist(), occ.tolist(), zips, strict=True))
    )
    fh.write("".join(lines).encode("latin-1"))


def write_u_genre(fh: BinaryIO, cat: Catalogue) -> None:
    fh.write(("".join(f"{g}|{k}\n" for k, g in enumerate(GENRES_100K)) + "\n").encode("latin-1"))


def write_u_occupation(fh: BinaryIO, cat: Catalogue) -> None:
    fh.write("".join(f"{o}\n" for o in OCCUPATIONS_100K).encode("latin-1"))


def write_u_info(fh: BinaryIO, cat: Catalogue, ratings: int) -> None:
    fh.write(f"{cat.model.users} users\n{cat.model.items} items\n{ratings} ratings\n".encode())


def write_readme(fh: BinaryIO, cat: Catalogue, edition: str, ratings: int) -> None:
    """A README naming the edition in the way GroupLens READMEs do ("(ml-latest-small)")."""
    text = (
        f"Synthetic MovieLens-format sample ({edition}) written by bonmf-pipe sample.\n\n"
        f"{ratings} ratings by {cat.model.users} users of {cat.model.items} movies, seed {cat.seed}.\n"
        "Not MovieLens data: every rating, title, genre and poster comes from a latent factor\n"
        "model (see bonmf_pipe/pipeline/sample/writer.py). It only shares the file format of the\n"
        "MovieLens datasets (F. Maxwell Harper and Joseph A. Konstan. 2015. The MovieLens\n"
        "Datasets: History and Context. ACM TiiS 5, 4, Article 19).\n"
    )
    fh.write(text.replace("\n", "\r\n" if edition == "ml-latest-small" else "\n").encode())


CATALOGUE_WRITERS: dict[str, Callable[[BinaryIO, Catalogue], None]] = {
    "movies.csv": write_movies_csv,
    "links.csv": write_links_csv,
    "movies.dat": write_movies_dat,
    "users.dat": write_users_dat,
    "u.item": write_u_item,
    "u.user": write_u_user,
    "u.genre": write_u_genre,
    "u.occupation": write_u_occupation,
}


# -- ratings and tags, block by block ----------------------------------------------------------


def ratings_header(spec: EditionSpec) -> bytes:
    return b"userId,movieId,rating,timestamp\r\n" if spec.name == "ml-latest-small" else b""


def tags_header(spec: EditionSpec) -> bytes:
    return b"userId,movieId,tag,timestamp\r\n" if spec.tags_file else b""


def write_ratings_block(fh: BinaryIO, spec: EditionSpec, cat: Catalogue, block: RatingBlock) -> np.ndarray:
    """Append the block's ratings to ``fh``; returns the rating values written."""
    import polars as pl  # here, not at the top: every command imports SampleSettings, few write samples
    values = rating_values(block, spec.half_stars)
    users = block.users + 1
    items = cat.item_ids[block.items]
    if spec.name == "ml-latest-small":  # sorted by user, movie
        frame = pl.DataFrame({"u": users, "i": items, "r": values.astype(np.float32), "t": block.timestamp})
        frame.write_csv(fh, include_header=False, line_terminator="\r\n", float_precision=1)
        return values
    if spec.name == "ml-1m":  # by user, then time
        order = np.lexsort((block.timestamp, users))
        frame = pl.DataFrame({"u": users[order], "i": items[order], "r": values[order], "t": block.timestamp[order]})
        line = frame.select(pl.concat_str(pl.all(), separator="::"))
        line.write_csv(fh, include_header=False, quote_style="never")
        return values
    order = block.rng.permutation(len(users))  # ml-100k: u.data is in no order
    frame = pl.DataFrame({"u": users[order], "i": items[order], "r": values[order], "t": block.timestamp[order]})
    frame.write_csv(fh, include_header=False, separator="\t")
    return values


def write_tags_block(fh: BinaryIO, cat: Catalogue, block: RatingBlock) -> int:
    """Tag about ``tag_rate`` of the block's ratings with a word of the item's slots; returns the count."""
    import polars as pl
    picked = np.flatnonzero(block.rng.random(len(block.users)) < cat.tag_rate)
    if not len(picked):
        return 0
    items = block.items[picked]
    frame = pl.DataFrame(
        {
            "u": block.users[picked] + 1,
            "i": cat.item_ids[items],
            "tag": tag_words(cat.model.item_z, items, block.rng),
            "t": block.timestamp[picked] + block.rng.integers(1, 600, len(picked)),
        }
    )
    frame.write_csv(fh, include_header=False, line_terminator="\r\n")
    return len(picked)
