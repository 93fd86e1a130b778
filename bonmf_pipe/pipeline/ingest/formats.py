"""MovieLens editions: which files each has, how their lines look, and how to tell them apart.

Three families share a layout:

- ``ml-100k``: ``u.data`` (tab: user item rating timestamp), ``u.item`` (``|``, latin-1:
  id|title|release date|video release date|IMDb URL|19 genre flags), ``u.user``
  (id|age|gender|occupation name|zip), ``u.genre`` and ``u.occupation`` (name lists).
- ``::`` editions, ml-1m and ml-10m: ``ratings.dat``, ``movies.dat`` (latin-1 in ml-1m), plus
  ``users.dat`` (ml-1m: UserID::Gender::Age::Occupation::Zip) or ``tags.dat`` (ml-10m).
- CSV editions, ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m: ``ratings.csv``,
  ``movies.csv`` (titles with commas are quoted), ``tags.csv``, ``links.csv``; UTF-8 with
  a header line.

Every file is decoded line by line: a line that is valid UTF-8 is read as UTF-8, any other
line as latin-1 (the encoding of ml-1m and ml-100k), so a re-encoded copy of either reads
the same and one stray latin-1 line never changes how the rest of a UTF-8 file reads. The
summary counts, per file, the lines read as latin-1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bonmf_pipe.errors import ConfigError, InputError


@dataclass(frozen=True)
class LineFormat:
    """How one line of a file splits into named string fields.

    Either ``sep`` (a literal separator; the line must have exactly ``len(fields)`` parts)
    or ``pattern`` (a regex with one group per field, for CSV lines whose middle field may
    hold quoted commas). ``header`` is the expected first line of CSV files.
    """

    fields: tuple[str, ...]
    sep: str | None = None
    pattern: str | None = None
    header: tuple[str, ...] | None = None
    quoted: str | None = None  # the field that may be CSV-quoted ("title", "tag")


# Ratings files ------------------------------------------------------------------------
RATING_FIELDS = ("user_id", "item_id", "rating", "timestamp")
U_DATA = LineFormat(RATING_FIELDS, sep="\t")
RATINGS_DAT = LineFormat(RATING_FIELDS, sep="::")
RATINGS_CSV = LineFormat(RATING_FIELDS, sep=",", header=("userId", "movieId", "rating", "timestamp"))

# Movies files -------------------------------------------------------------------------
U_ITEM = LineFormat(("item_id", "title", "release_date", "video_release_date", "imdb_url")
                    + tuple(f"g{i}" for i in range(19)), sep="|")
MOVIES_DAT = LineFormat(("item_id", "title", "genres"), pattern=r"^([^:]*)::(.*)::([^:]*)$")
MOVIES_CSV = LineFormat(
    ("item_id", "title", "genres"),
    pattern=r"^([^,]*),(.*),([^,]*)$",
    header=("movieId", "title", "genres"),
    quoted="title",
)

# Users, tags, links -------------------------------------------------------------------
U_USER = LineFormat(("user_id", "age", "gender", "occupation", "zip_code"), sep="|")
USERS_DAT = LineFormat(("user_id", "gender", "age", "occupation", "zip_code"), sep="::")
TAG_FIELDS = ("user_id", "item_id", "tag", "timestamp")
TAGS_DAT = LineFormat(TAG_FIELDS, pattern=r"^([^:]*)::([^:]*)::(.*)::([^:]*)$")
TAGS_CSV = LineFormat(
    TAG_FIELDS,
    pattern=r"^([^,]*),([^,]*),(.*),([^,]*)$",
    header=("userId", "movieId", "tag", "timestamp"),
    quoted="tag",
)
LINKS_CSV = LineFormat(("item_id", "imdb_id", "tmdb_id"), sep=",", header=("movieId", "imdbId", "tmdbId"))


@dataclass(frozen=True)
class EditionFormat:
    """The files of one MovieLens family and the format of each (None: the family has none)."""

    family: str  # "100k", "dat", "csv"
    ratings: tuple[str, LineFormat]
    movies: tuple[str, LineFormat]
    users: tuple[str, LineFormat] | None = None
    tags: tuple[str, LineFormat] | None = None
    links: tuple[str, LineFormat] | None = None
    rating_scale: str = "half"  # "integer": 1..5; "half": 0.5..5.0 in half steps


FORMAT_100K = EditionFormat(
    "100k", ("u.data", U_DATA), ("u.item", U_ITEM), users=("u.user", U_USER), rating_scale="integer"
)
FORMAT_1M = EditionFormat(
    "dat", ("ratings.dat", RATINGS_DAT), ("movies.dat", MOVIES_DAT), users=("users.dat", USERS_DAT),
    rating_scale="integer",
)
FORMAT_10M = EditionFormat("dat", ("ratings.dat", RATINGS_DAT), ("movies.dat", MOVIES_DAT), tags=("tags.dat", TAGS_DAT))
FORMAT_CSV = EditionFormat(
    "csv", ("ratings.csv", RATINGS_CSV), ("movies.csv", MOVIES_CSV), tags=("tags.csv", TAGS_CSV),
    links=("links.csv", LINKS_CSV),
)

CSV_EDITIONS = ("ml-latest-small", "ml-latest", "ml-20m", "ml-25m", "ml-32m")
EDITIONS: dict[str, EditionFormat] = {
    "ml-100k": FORMAT_100K,
    "ml-1m": FORMAT_1M,
    "ml-10m": FORMAT_10M,
    **{name: FORMAT_CSV for name in CSV_EDITIONS},
    "ml-csv": FORMAT_CSV,  # a CSV edition that could not be told apart (no README, renamed folder)
}
DATASET_CHOICES = ("auto", *EDITIONS)

# ml-100k genre flags in u.item, in order (used when u.genre is absent).
GENRES_100K = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# ml-100k occupation names (u.occupation), whose 0-based position is USERS.occupation.
OCCUPATIONS_100K = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive", "healthcare",
    "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer", "retired", "salesman",
    "scientist", "student", "technician", "writer",
)
# ml-1m occupation codes (users.dat) and their names, from the ML-1M README.
OCCUPATIONS_1M = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer", "programmer",
    "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer", "tradesman/craftsman",
    "unemployed", "writer",
)

_README_NAME = re.compile(r"\((ml-[a-z0-9-]+)\)", re.IGNORECASE)


def detect_edition(path: Path) -> str:
    """The MovieLens edition in folder ``path``, from the files it holds.

    ``u.data`` or ``u.item`` means ml-100k; ``users.dat`` ml-1m and ``tags.dat`` ml-10m (else
    the ratings decide: half stars are ml-10m); ``movies.csv`` a CSV edition, named from its
    README ("This dataset (ml-25m) ...") or its folder name, else the generic ``ml-csv``.
    """
    path = Path(path)
    check_folder(path)
    names = {p.name for p in path.iterdir() if p.is_file()}
    if names & {"u.data", "u.item"}:
        return "ml-100k"
    if names & {"movies.dat", "ratings.dat"}:
        return _detect_dat(path, names)
    if names & {"movies.csv", "ratings.csv"}:
        return _detect_csv(path, names)
    raise InputError(
        f"{path}: no MovieLens files found (expected u.data/u.item, movies.dat/ratings.dat or "
        "movies.csv/ratings.csv). Point --path at the unzipped MovieLens folder."
    )


def check_folder(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such folder. Point --path at an unzipped MovieLens folder.")
    if not path.is_dir():
        raise InputError(f"{path} is a file, not a folder. Point --path at the folder that holds the MovieLens files.")


def _detect_dat(path: Path, names: set[str]) -> str:
    if "users.dat" in names:
        return "ml-1m"
    if "tags.dat" in names:
        return "ml-10m"
    if "ratings.dat" in names:
        with open(path / "ratings.dat", "rb") as fh:
            head = fh.read(1 << 20).split(b"\n")[:-1]
        ratings = [parts[2] for parts in (line.split(b"::") for line in head) if len(parts) == 4]
        if any(b"." in r for r in ratings):
            return "ml-10m"
    return "ml-10m" if "10m" in path.name.lower() else "ml-1m"


def _detect_csv(path: Path, names: set[str]) -> str:
    for readme in ("README.txt", "README.md", "README"):
        if readme in names:
            text = (path / readme).read_text(encoding="utf-8", errors="replace")[:4000]
            for match in _README_NAME.finditer(text):
                if match.group(1).lower() in CSV_EDITIONS:
                    return match.group(1).lower()
    folder = path.resolve().name.lower()
    return folder if folder in CSV_EDITIONS else "ml-csv"


def resolve_edition(path: Path, dataset: str = "auto") -> tuple[str, EditionFormat]:
    """The edition name and format to read ``path`` with; checks that its files exist."""
    path = Path(path)
    if dataset not in DATASET_CHOICES:
        raise ConfigError(f"--dataset {dataset!r} is not one of {', '.join(DATASET_CHOICES)}.")
    check_folder(path)
    edition = detect_edition(path) if dataset == "auto" else dataset
    fmt = EDITIONS[edition]
    movies = path / fmt.movies[0]
    if not movies.is_file():
        raise InputError(
            f"{path}: {fmt.movies[0]} is missing, so this is not a complete {edition} folder"
            + (" (was --dataset right?)." if dataset != "auto" else ".")
        )
    return edition, fmt
