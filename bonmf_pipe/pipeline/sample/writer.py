"""``bonmf-pipe sample``: a synthetic dataset in the exact file format of a MovieLens edition.

The generative model
====================
Everything comes from latent factors, so ratings, titles, genres, tags and posters all
carry real, learnable signal, and the ground truth is known (``latent_model(settings)``).

Items and users. Each item ``i`` has standardised factors ``z_i ~ N(0, I_F)`` (F =
``factors``, default 8), factor vector ``V_i = 0.45 z_i`` and bias ``b_i ~ N(0, 0.35^2)``.
Each user ``u`` has ``U_u = t + 0.45 N(0, I_F)`` and ``b_u ~ N(0, 0.4^2)``, where the
population taste ``t = (+0.25, -0.25, +0.25, ...)`` makes factor 0 liked and factor 1
disliked on average, so genres tied to those factors have different mean ratings.

Ratings. ``score = mu + b_u + b_i + U_u . V_i + N(0, noise^2)`` (``mu`` about 3.5),
rounded to the edition's scale: whole stars 1..5 (ml-1m, ml-100k), or for ml-latest-small
whole stars 60% of the time and half stars 0.5..5 otherwise, clipped to the scale.

Which items a user rates. Popularity is Zipf-like: item ``i`` gets a random rank ``r_i`` and
weight ``p_i ~ r_i^-a * exp(0.8 appeal_i)`` (``a`` = ``popularity_exponent``, appeal =
``b_i + t . V_i``: better films are also more popular). Users have lognormal activity
(``activity_sigma``); their counts are allocated so that they sum to exactly ``ratings``,
each between ``min(min_user_ratings, ratings // users)`` and ``items``. A user's items are
drawn in proportion to ``p`` without replacement (successive sampling: draws with
replacement keep the first distinct ones; users who rate over a quarter of the catalogue
use the equivalent Gumbel top-k), so each (user, item) occurs at most once.

Timestamps. Each user starts at a random time within the edition's period; 40% rate
everything within a day, the others over an exponential span (mean 200 days), with most
ratings early. A rating is never earlier than the film's release (plus up to 60 days).

Words. A *slot* is a (factor, sign) pair; each slot owns two genres, adjectives, nouns and
tags (``sample_text``). Every factor with ``|z| > 1`` gives its slot's common genre and
``|z| > 1.8`` also the rarer one (at most 4; at least the strongest factor's). A title is an
adjective from the strongest factor's slot and a noun from the second strongest's, in one
of a few MovieLens patterns ("Cursed Crypt, The (1994)"), and a release year. Tags
(ml-latest-small) on about ``tag_rate`` of the ratings are words of the item's two
strongest slots.

Users files (ml-1m ``users.dat``, ml-100k ``u.user``): gender, age, occupation and zip code
are seeded noise that carries no signal.

Posters (``sample_posters``). Background hue = angle of (z_0, z_1); brightness = appeal;
shape kind (circle, square, triangle, diamond, bars, ring) = the strongest of factors 2..
and its sign; number of shapes (1..6) = its magnitude; the title in a band at the bottom.

Determinism and size. Every random draw comes from ``SeedSequence([seed, stream, ...])``:
the same settings give byte-identical files. Ratings are generated and written one block
of users (about ``block_ratings`` ratings) at a time, so memory is bounded by the items x
factors tables plus one block, whatever the number of ratings (25M streams fine).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.featurestore.io import atomic_path, atomic_write_json, tmp_path_for
from bonmf_pipe.pipeline.sample import formats as fmt
from bonmf_pipe.pipeline.sample.latent import STREAM_TEXT, LatentModel, RatingBlocks, build_model, check_sizes, rng_for
from bonmf_pipe.pipeline.sample.posters import draw_posters, poster_specs
from bonmf_pipe.pipeline.sample.text import item_text
from bonmf_pipe.progress import ProgressCallback, Reporter

SAMPLE_EDITIONS = tuple(fmt.EDITIONS)
MANIFEST = "bonmf-sample.json"  # settings and counts of the sample, written last


@dataclass(frozen=True)
class SampleSettings:
    """Settings of ``write_sample`` (written into ``bonmf-sample.json`` beside the files).

    The default size suits the demo: the whole pipeline (ingest, encode 1,000 titles and
    posters on CPU with the small offline encoders, train, evaluate) in a few minutes on 2
    cores. Encoding is the slow part and grows with the number of items; ratings cost little.
    50k ratings of 600 users x 1,000 items give every user at least 20 ratings and every movie
    50 on average (median 27; density 8%, ML-1M's 4%), enough for the ID embeddings to learn
    and for ranking metrics to mean something.
    """

    out: Path = Path("bonmf-sample")
    """Folder to write into: empty, new, or an earlier sample (which is replaced)."""
    users: int = 600
    """Number of users; every one rates at least one movie."""
    items: int = 1000
    """Number of movies in the catalogue (some may get no rating)."""
    ratings: int = 50_000
    """Exact number of rating lines; needs users <= ratings <= users * items."""
    seed: int = 42
    """The same seed and settings give byte-identical files."""
    edition: str = "ml-latest-small"
    """File format: ml-latest-small, ml-1m or ml-100k."""
    posters: bool = True
    """Also draw DIR/posters/<movieId>.jpg."""
    factors: int = 8
    """Latent factors behind ratings, words and posters."""
    noise: float = 0.5
    """Standard deviation of the rating noise, in stars."""
    popularity_exponent: float = 1.0
    """Zipf exponent of item popularity (0..2)."""
    activity_sigma: float = 1.0
    """Lognormal sigma of user activity (0..3; higher: more skewed)."""
    min_user_ratings: int = 20
    """Every user rates at least this many (when ratings allow)."""
    tag_rate: float = 0.04
    """Share of ratings that come with a tag (ml-latest-small only)."""
    block_ratings: int = 500_000
    """Ratings per generated block: bounds memory; part of the stream."""
    poster_workers: int = 0
    """Processes drawing posters (0: one per CPU)."""

    def check(self) -> None:
        """Raise ConfigError for settings no sample can have."""
        if self.edition not in fmt.EDITIONS:
            raise ConfigError(f"--edition {self.edition!r} is not one of {', '.join(SAMPLE_EDITIONS)}.")
        check_sizes(self.users, self.items, self.ratings, self.factors)
        if self.block_ratings < 1 or self.noise < 0 or not 0 <= self.tag_rate <= 1:
            raise ConfigError("block_ratings must be >= 1, noise >= 0 and tag_rate within 0..1.")
        if not 0 <= self.popularity_exponent <= 2 or not 0 <= self.activity_sigma <= 3:
            raise ConfigError("popularity_exponent must be within 0..2 and activity_sigma within 0..3.")


@dataclass(frozen=True)
class SampleSummary:
    """What ``write_sample`` wrote."""

    out: Path
    edition: str
    users: int
    items: int
    ratings: int
    tags: int
    posters: int
    rating_mean: float
    seconds: float  # the whole sample
    ratings_seconds: float  # catalogue, ratings and tags files
    posters_seconds: float
    files: list[str] = field(default_factory=list)  # names relative to ``out``


def latent_model(settings: SampleSettings) -> LatentModel:
    """The ground truth behind a sample: factors, biases, popularity and user counts."""
    settings.check()
    spec = fmt.EDITIONS[settings.edition]
    return build_model(
        settings.seed, settings.users, settings.items, settings.ratings, settings.factors, spec.period,
        spec.mean, settings.popularity_exponent, settings.activity_sigma, settings.min_user_ratings,
    )


def catalogue(settings: SampleSettings, model: LatentModel | None = None) -> fmt.Catalogue:
    """Movie ids, titles with years and genres of every item (index ``i`` is item ``i``)."""
    model = model or latent_model(settings)
    spec = fmt.EDITIONS[settings.edition]
    rng = rng_for(settings.seed, STREAM_TEXT)
    ids = fmt.item_ids(rng, model.items, spec.id_gap_rate)
    text = item_text(model.item_z, rng)
    titles = [f"{t} ({y})" for t, y in zip(text.titles, model.item_year.tolist(), strict=True)]
    tag_rate = settings.tag_rate if spec.tags_file else 0.0
    return fmt.Catalogue(ids, titles, text.genres, model, settings.seed, tag_rate)


def write_sample(settings: SampleSettings, progress: ProgressCallback | None = None) -> SampleSummary:
    """Write the sample into ``settings.out``; see the module docstring for what it holds."""
    started = time.perf_counter()
    settings.check()
    report = Reporter(progress)
    out = Path(settings.out)
    old_files = _prepare_folder(out)
    spec = fmt.EDITIONS[settings.edition]
    cat = catalogue(settings)
    report.note(
        f"sampling {settings.ratings:,} {settings.edition} ratings of {settings.users:,} users and "
        f"{settings.items:,} movies (synthetic, seed {settings.seed})"
    )
    written = [*spec.catalogue, spec.ratings_file, *([spec.tags_file] if spec.tags_file else [])]
    tags, total = _write_files(out, spec, cat, settings, report)
    ratings_done = time.perf_counter()
    posters = _write_posters(out, cat, settings, report) if settings.posters else 0
    posters_done = time.perf_counter()
    summary = SampleSummary(
        out=out, edition=spec.name, users=settings.users, items=settings.items, ratings=settings.ratings,
        tags=tags, posters=posters, rating_mean=total / settings.ratings, seconds=posters_done - started,
        ratings_seconds=ratings_done - started, posters_seconds=posters_done - ratings_done,
        files=sorted(written) + (["posters/"] if posters else []),
    )
    _finish(out, settings, summary, old_files)
    return summary


def _prepare_folder(out: Path) -> list[str]:
    """Create ``out``; refuse a non-empty folder that is not an earlier sample. Returns the
    files of the earlier sample (removed at the end when the new sample does not have them)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out needs a folder.")
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".*.tmp-*"):  # temporary files of a killed earlier run
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    manifest = out / MANIFEST
    if manifest.is_file():
        return list(json.loads(manifest.read_text()).get("files", []))
    if any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise ConfigError(
            f"{out} is not empty and holds no earlier sample ({MANIFEST}); choose an empty or new folder for --out."
        )
    return []


def _write_files(out: Path, spec: fmt.EditionSpec, cat: fmt.Catalogue, settings: SampleSettings, report: Reporter) -> tuple[int, float]:
    """Catalogue files, then ratings (and tags) block by block, all atomically."""
    with contextlib.ExitStack() as stack:
        for name in spec.catalogue:
            tmp = stack.enter_context(atomic_path(out / name))
            with open(tmp, "wb") as fh:
                if name.startswith("README"):
                    fmt.write_readme(fh, cat, spec.name, settings.ratings)
                elif name == "u.info":
                    fmt.write_u_info(fh, cat, settings.ratings)
                else:
                    fmt.CATALOGUE_WRITERS[name](fh, cat)
        ratings_fh = stack.enter_context(open(stack.enter_context(atomic_path(out / spec.ratings_file)), "wb"))
        ratings_fh.write(fmt.ratings_header(spec))
        tags_fh = None
        if spec.tags_file:
            tags_fh = stack.enter_context(open(stack.enter_context(atomic_path(out / spec.tags_file)), "wb"))
            tags_fh.write(fmt.tags_header(spec))
        return _stream_ratings(ratings_fh, tags_fh, spec, cat, settings, report)


def _stream_ratings(ratings_fh, tags_fh, spec, cat, settings, report) -> tuple[int, float]:
    tags, total = 0, 0.0
    report.begin("sample ratings", total=settings.ratings, unit="ratings")
    for block in RatingBlocks(cat.model, settings.seed, settings.block_ratings, settings.noise):
        values = fmt.write_ratings_block(ratings_fh, spec, cat, block)
        total += float(values.sum())
        if tags_fh is not None:
            tags += fmt.write_tags_block(tags_fh, cat, block)
        report.advance("sample ratings", len(values))
    report.end("sample ratings")
    ratings_fh.flush()
    if tags_fh is not None:
        tags_fh.flush()
    return tags, total


def _write_posters(out: Path, cat: fmt.Catalogue, settings: SampleSettings, report: Reporter) -> int:
    """Draw every poster into a temporary folder, then swap it in for ``out/posters``."""
    titles = [t.rsplit(" (", 1)[0] for t in cat.titles]
    specs = poster_specs(cat.item_ids, titles, cat.model.item_z, cat.model.item_appeal)
    tmp = tmp_path_for(out / "posters")
    tmp.mkdir()
    try:
        report.begin("sample posters", total=len(specs), unit="posters")
        for done in draw_posters(specs, settings.seed, tmp, settings.poster_workers):
            report.advance("sample posters", done)
        report.end("sample posters")
        old = tmp_path_for(out / "posters-old")
        if (out / "posters").exists():
            (out / "posters").rename(old)
        tmp.rename(out / "posters")
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(specs)


def _finish(out: Path, settings: SampleSettings, summary: SampleSummary, old_files: list[str]) -> None:
    """Remove files of an earlier sample that this one lacks, then write the manifest."""
    for name in set(old_files) - set(summary.files):
        target = out / name
        if name.endswith("/"):
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    record = {
        "settings": {k: v for k, v in asdict(settings).items() if k != "out"},  # path-free: same bytes anywhere
        "files": summary.files,
        "counts": {"users": summary.users, "items": summary.items, "ratings": summary.ratings,
                   "tags": summary.tags, "posters": summary.posters},
        "rating_mean": round(summary.rating_mean, 6),
    }
    atomic_write_json(out / MANIFEST, record)

