"""The synthetic sampler: determinism, exact MovieLens formats, real signal, ingest round trip."""

from __future__ import annotations

import colorsys
import csv
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.errors import ConfigError
from bonmf_pipe.pipeline.sample import MANIFEST, SampleSettings, catalogue, latent_model, write_sample
from bonmf_pipe.pipeline.sample.latent import allocate_counts
from bonmf_pipe.pipeline.ingest.formats import GENRES_100K
from bonmf_pipe.pipeline.sample.text import ADJECTIVES, GENRES_1M

ML_LATEST_GENRES = {g.replace("Children's", "Children") for g in GENRES_1M}
SMALL = dict(users=40, items=150, ratings=3000, block_ratings=700, poster_workers=1)


def _sample(tmp_path: Path, name: str = "s", **kw) -> tuple[SampleSettings, Path]:
    settings = SampleSettings(out=tmp_path / name, **{**SMALL, **kw})
    write_sample(settings)
    return settings, settings.out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- determinism ------------------------------------------------------------------------------


@pytest.mark.parametrize("edition", ["ml-latest-small", "ml-1m", "ml-100k"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, edition):
    _, a = _sample(tmp_path, "a", edition=edition)
    _, b = _sample(tmp_path, "b", edition=edition)
    _, c = _sample(tmp_path, "c", edition=edition, seed=7)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert fa == fb
    assert len([n for n in fa if n.startswith("posters/")]) == SMALL["items"]
    ratings = {"ml-latest-small": "ratings.csv", "ml-1m": "ratings.dat", "ml-100k": "u.data"}[edition]
    top_a, top_c = ({n for n in f if "/" not in n} for f in (fa, fc))
    assert top_a == top_c and fa[ratings] != fc[ratings]
    posters_a, posters_c = ({v for n, v in f.items() if n.startswith("posters/")} for f in (fa, fc))
    assert len(posters_c) == SMALL["items"] and not posters_a & posters_c


def test_poster_pool_draws_the_same_bytes(tmp_path):
    from bonmf_pipe.pipeline.sample.posters import draw_posters, poster_specs

    settings = SampleSettings(out=tmp_path / "unused", **SMALL)
    cat = catalogue(settings)
    specs = poster_specs(cat.item_ids[:40], cat.titles[:40], cat.model.item_z[:40], cat.model.item_appeal[:40])
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    assert sum(draw_posters(specs, 42, tmp_path / "one", workers=1, chunk=10)) == 40
    assert sum(draw_posters(specs, 42, tmp_path / "two", workers=2, chunk=10)) == 40
    assert _files(tmp_path / "one") == _files(tmp_path / "two")


def test_progress_counts_ratings_and_posters(tmp_path):
    events = []
    write_sample(SampleSettings(out=tmp_path / "p", **SMALL), events.append)
    for task, total in (("sample ratings", SMALL["ratings"]), ("sample posters", SMALL["items"])):
        begin = [e for e in events if e.kind == "begin" and e.task == task]
        assert len(begin) == 1 and begin[0].total == total
        assert sum(e.advance for e in events if e.kind == "advance" and e.task == task) == total
        assert any(e.kind == "end" and e.task == task for e in events)


# -- exact formats ----------------------------------------------------------------------------


def _check_ratings(rows: list[tuple[int, int, float, int]], settings: SampleSettings, item_ids: set[int], scale: set[float]):
    assert len(rows) == settings.ratings  # --ratings R: exactly R rating lines
    pairs = {(u, i) for u, i, _, _ in rows}
    assert len(pairs) == len(rows), "a (user, movie) pair occurs twice"
    assert {u for u, _, _, _ in rows} == set(range(1, settings.users + 1))  # every user rates
    assert {i for _, i, _, _ in rows} <= item_ids
    assert {r for _, _, r, _ in rows} <= scale
    per_user = np.bincount([u for u, *_ in rows])[1:]
    assert per_user.min() >= min(settings.min_user_ratings, settings.ratings // settings.users)


def test_ml_latest_small_format(tmp_path):
    settings, out = _sample(tmp_path, posters=False)
    for name in ("movies.csv", "ratings.csv", "tags.csv", "links.csv"):
        raw = (out / name).read_bytes()
        assert raw.endswith(b"\r\n") and raw.count(b"\n") == raw.count(b"\r\n"), f"{name}: CRLF lines"
        raw.decode("utf-8")
    movies = list(csv.reader(io.StringIO((out / "movies.csv").read_text("utf-8"), newline="")))
    assert movies[0] == ["movieId", "title", "genres"] and len(movies) == settings.items + 1
    ids = [int(m[0]) for m in movies[1:]]
    assert ids == sorted(set(ids)) and ids[-1] > len(ids), "ids increase, with gaps like MovieLens"
    for _, title, genres in movies[1:]:
        assert title[-6:-5] == "(" and title[-5:-1].isdigit() and title.endswith(")")
        assert set(genres.split("|")) <= ML_LATEST_GENRES
    commas = [m for m in movies[1:] if "," in m[1]]
    assert commas and all(f'"{m[1]}"' in (out / "movies.csv").read_text("utf-8") for m in commas)
    text = (out / "ratings.csv").read_text("utf-8").splitlines()
    assert text[0] == "userId,movieId,rating,timestamp"
    rows = [(int(u), int(i), float(r), int(t)) for u, i, r, t in (line.split(",") for line in text[1:])]
    assert all(len(line.split(",")[2]) == 3 for line in text[1:])  # "4.0", "3.5"
    _check_ratings(rows, settings, set(ids), {k / 2 for k in range(1, 11)})
    assert [(u, i) for u, i, *_ in rows] == sorted((u, i) for u, i, *_ in rows)
    assert all(828_000_000 < t < 1_538_000_000 for *_, t in rows)
    tags = list(csv.reader(io.StringIO((out / "tags.csv").read_text("utf-8"), newline="")))
    assert tags[0] == ["userId", "movieId", "tag", "timestamp"] and len(tags) > 1
    assert all(int(t[1]) in set(ids) and t[2] for t in tags[1:])
    links = list(csv.reader(io.StringIO((out / "links.csv").read_text("utf-8"), newline="")))
    assert links[0] == ["movieId", "imdbId", "tmdbId"] and [int(r[0]) for r in links[1:]] == ids
    assert all(len(r[1]) == 7 and r[1].isdigit() for r in links[1:])


def test_ml_1m_format(tmp_path):
    settings, out = _sample(tmp_path, edition="ml-1m", posters=False, items=600, ratings=4000)
    movies = [line.split("::") for line in (out / "movies.dat").read_bytes().decode("latin-1").split("\n")[:-1]]
    assert len(movies) == settings.items and all(len(m) == 3 for m in movies)
    assert all(set(m[2].split("|")) <= set(GENRES_1M) for m in movies)
    titles = [m[1] for m in movies]
    assert any(not t.isascii() for t in titles), "latin-1 titles (Café, Noël, Señor) are part of the format"
    with pytest.raises(UnicodeDecodeError):
        (out / "movies.dat").read_bytes().decode("utf-8")
    users = [line.split("::") for line in (out / "users.dat").read_text("latin-1").split("\n")[:-1]]
    assert [int(u[0]) for u in users] == list(range(1, settings.users + 1))
    assert all(u[1] in "MF" and int(u[2]) in (1, 18, 25, 35, 45, 50, 56) and 0 <= int(u[3]) <= 20 for u in users)
    lines = (out / "ratings.dat").read_text("latin-1").split("\n")
    assert lines[-1] == ""
    rows = [tuple(int(x) for x in line.split("::")) for line in lines[:-1]]
    assert all(len(r) == 4 for r in rows)
    _check_ratings(rows, settings, {int(m[0]) for m in movies}, {1, 2, 3, 4, 5})
    assert [r[0] for r in rows] == sorted(r[0] for r in rows), "grouped by user"
    assert all(956_000_000 < r[3] < 1_046_500_000 for r in rows)


def test_ml_100k_format(tmp_path):
    settings, out = _sample(tmp_path, edition="ml-100k", posters=False)
    genres = [line.split("|") for line in (out / "u.genre").read_text("latin-1").split("\n") if line]
    assert [g for g, _ in genres] == list(GENRES_100K) and [int(k) for _, k in genres] == list(range(19))
    items = [line.split("|") for line in (out / "u.item").read_text("latin-1").split("\n")[:-1]]
    assert len(items) == settings.items and all(len(r) == 24 for r in items)
    for row in items:
        assert row[2][2] == "-" and row[2][-4:] == row[1][-5:-1]  # "17-Jun-1983" matches "(1983)"
        assert row[3] == "" and row[4].startswith("http://us.imdb.com/M/title-exact?")
        assert set(row[5:]) <= {"0", "1"} and "1" in row[5:]
    occupations = (out / "u.occupation").read_text().split()
    users = [line.split("|") for line in (out / "u.user").read_text("latin-1").split("\n")[:-1]]
    assert len(users) == settings.users and all(u[3] in occupations and u[2] in "MF" for u in users)
    rows = [tuple(int(x) for x in line.split("\t")) for line in (out / "u.data").read_text().split("\n")[:-1]]
    _check_ratings(rows, settings, {int(r[0]) for r in items}, {1, 2, 3, 4, 5})
    info = (out / "u.info").read_text().split("\n")
    assert info[:3] == [f"{settings.users} users", f"{settings.items} items", f"{settings.ratings} ratings"]


def test_every_pair_once_when_ratings_fill_the_matrix(tmp_path):
    settings, out = _sample(tmp_path, users=7, items=9, ratings=63, posters=False, edition="ml-100k")
    rows = {tuple(line.split("\t")[:2]) for line in (out / "u.data").read_text().split("\n")[:-1]}
    assert len(rows) == 63


def test_steep_popularity_still_gives_distinct_items(tmp_path):
    # a Zipf exponent of 2 leaves the tail nearly unreachable by draws with replacement:
    # those users fall back to Gumbel top-k over the catalogue
    settings, out = _sample(tmp_path, users=20, items=2000, ratings=20 * 450, popularity_exponent=2.0, posters=False,
                            edition="ml-100k")
    rows = [tuple(line.split("\t")[:2]) for line in (out / "u.data").read_text().split("\n")[:-1]]
    assert len(rows) == len(set(rows)) == settings.ratings


def test_impossible_sizes_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="every user rates at least one"):
        write_sample(SampleSettings(out=tmp_path / "a", users=10, items=5, ratings=9))
    with pytest.raises(ConfigError, match="at most once"):
        write_sample(SampleSettings(out=tmp_path / "b", users=10, items=5, ratings=51))
    with pytest.raises(ConfigError, match="ml-1m"):
        write_sample(SampleSettings(out=tmp_path / "c", edition="ml-25m"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_allocate_counts_exact_within_bounds():
    rng = np.random.default_rng(0)
    for total, floor, cap in ((5000, 20, 400), (800, 3, 30), (30 * 30, 5, 30), (60, 2, 30), (61, 2, 30)):
        counts = allocate_counts(rng.lognormal(0, 1.5, 30), total, floor, cap)
        assert counts.sum() == total and counts.min() >= floor and counts.max() <= cap


def test_rerun_replaces_an_earlier_sample_and_refuses_other_folders(tmp_path):
    _, out = _sample(tmp_path, edition="ml-latest-small")
    assert (out / "posters").is_dir()
    _sample(tmp_path, edition="ml-1m", posters=False)
    names = {p.name for p in out.iterdir()}
    assert names == {"movies.dat", "users.dat", "ratings.dat", "README", MANIFEST}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not empty"):
        write_sample(SampleSettings(out=tmp_path / "other", **SMALL))
    assert (tmp_path / "other" / "mine.txt").read_text() == "keep"


# -- the signal is real ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def signal_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("signal") / "s"
    settings = SampleSettings(out=out, users=400, items=400, ratings=40_000, poster_workers=1)
    write_sample(settings)
    movies = list(csv.reader(io.StringIO((out / "movies.csv").read_text("utf-8"), newline="")))[1:]
    ratings = np.loadtxt(out / "ratings.csv", delimiter=",", skiprows=1)
    return settings, out, movies, ratings


def _item_means(ratings: np.ndarray) -> dict[int, float]:
    sums: dict[int, list[float]] = defaultdict(list)
    for item, value in zip(ratings[:, 1].astype(int), ratings[:, 2], strict=True):
        sums[item].append(value)
    return {i: float(np.mean(v)) for i, v in sums.items()}


def test_genres_tied_to_liked_factors_get_better_ratings(signal_sample):
    _, _, movies, ratings = signal_sample
    means = _item_means(ratings)

    def genre_mean(genre: str) -> float:
        return float(np.mean([means[int(m[0])] for m in movies if genre in m[2].split("|") and int(m[0]) in means]))

    # population taste likes factor 0 (+: Action, -: Drama) and dislikes factor 1 (+: Comedy, -: Thriller)
    assert genre_mean("Action") - genre_mean("Drama") > 0.2
    assert genre_mean("Thriller") - genre_mean("Comedy") > 0.2


def test_title_words_follow_the_factors(signal_sample):
    settings, _, movies, ratings = signal_sample
    model = latent_model(settings)
    cat = catalogue(settings, model)
    index = {int(i): k for k, i in enumerate(cat.item_ids.tolist())}
    positive0 = set(ADJECTIVES[0]) - {w for words in ADJECTIVES[1:] for w in words}
    negative0 = set(ADJECTIVES[1]) - {w for k, words in enumerate(ADJECTIVES) if k != 1 for w in words}
    z_pos = [model.item_z[index[int(m[0])], 0] for m in movies if m[1].split()[0] in positive0]
    z_neg = [model.item_z[index[int(m[0])], 0] for m in movies if m[1].split()[0] in negative0]
    assert len(z_pos) >= 5 and len(z_neg) >= 5
    assert min(z_pos) > 0 > max(z_neg)  # the first adjective comes from the strongest factor's slot
    means = _item_means(ratings)
    pos_mean = np.mean([means[int(m[0])] for m in movies if m[1].split()[0] in positive0 and int(m[0]) in means])
    neg_mean = np.mean([means[int(m[0])] for m in movies if m[1].split()[0] in negative0 and int(m[0]) in means])
    assert pos_mean - neg_mean > 0.15  # words alone tell something about ratings


def test_ratings_follow_the_user_item_interaction(signal_sample):
    settings, _, movies, ratings = signal_sample
    model = latent_model(settings)
    cat = catalogue(settings, model)
    index = np.zeros(cat.item_ids.max() + 1, dtype=np.int64)
    index[cat.item_ids] = np.arange(len(cat.item_ids))
    users = ratings[:, 0].astype(int) - 1
    items = index[ratings[:, 1].astype(int)]
    dot = np.einsum("ij,ij->i", model.user_factors[users], model.item_factors[items])
    residual = ratings[:, 2] - model.mean - model.user_bias[users] - model.item_bias[items]
    assert np.corrcoef(model.expected_rating(users, items), ratings[:, 2])[0, 1] > 0.6
    assert np.corrcoef(dot, residual)[0, 1] > 0.4
    counts = np.bincount(items, minlength=model.items)
    assert counts.max() > 4 * np.median(counts), "popularity is skewed (even with a quarter of all pairs rated)"


def test_posters_are_rgb_jpegs_whose_colours_follow_the_factors(signal_sample):
    from PIL import Image

    settings, out, movies, _ = signal_sample
    model = latent_model(settings)
    cat = catalogue(settings, model)
    hits, bright = 0, []
    for k, item in enumerate(cat.item_ids.tolist()):
        with Image.open(out / "posters" / f"{item}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (185, 278)
            pixel = im.getpixel((1, 1))
        hue, _, value = colorsys.rgb_to_hsv(*(c / 255 for c in pixel))
        z = model.item_z[k]
        expected = (np.arctan2(z[1], z[0]) / (2 * np.pi)) % 1.0
        hits += min(abs(hue - expected), 1 - abs(hue - expected)) < 0.05
        bright.append(value)
    assert hits > 0.8 * len(cat.item_ids)  # background hue = angle of factors 0 and 1 (shapes may cover the corner)
    assert np.corrcoef(bright, model.item_appeal)[0, 1] > 0.5  # brighter posters for better films


# -- defaults, CLI and ingest round trip -----------------------------------------------------


def test_default_sample_is_feasible():
    SampleSettings().check()
    assert SampleSettings.ratings <= 60_000 and SampleSettings.items <= 1500


def test_cli_sample(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["sample", "--out", str(out), "--users", "30", "--items", "60", "--ratings", "900", "--edition", "ml-1m"]
    result = runner.invoke(app, [*args, "--no-posters"])
    assert result.exit_code == 0, result.output
    assert "900" in result.output and "ingest --path" in result.output
    assert len((out / "ratings.dat").read_text("latin-1").splitlines()) == 900 and not (out / "posters").exists()
    result = runner.invoke(app, ["sample", "--out", str(tmp_path / "x"), "--users", "30", "--ratings", "10"])
    assert result.exit_code == 1 and "every user rates at least one" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("edition", ["ml-latest-small", "ml-1m", "ml-100k"])
def test_round_trip_through_ingest(tmp_path, edition):
    ingest_mod = pytest.importorskip("bonmf_pipe.pipeline.ingest")
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.featurestore.sql import query

    settings = SampleSettings(out=tmp_path / "s", **{**SMALL, "edition": edition, "users": 30, "items": 80, "ratings": 1200})
    written = write_sample(settings)
    store = Store.open(tmp_path / "store", create=True)
    summary = ingest_mod.ingest(store, ingest_mod.IngestSettings(path=settings.out, posters=settings.out / "posters"))
    assert summary.edition == edition
    assert (summary.ratings, summary.items, summary.users) == (settings.ratings, settings.items, settings.users)
    assert summary.rejects == 0 and summary.posters_rejected == 0
    assert summary.posters_matched == settings.items and summary.tag_applications == written.tags
    mean = query(store, "SELECT avg(rating) AS m FROM ratings").column("m")[0].as_py()
    assert mean == pytest.approx(written.rating_mean)
