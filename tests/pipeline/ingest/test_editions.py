"""Every edition's parser on tiny files in its exact format: values, rejects, reasons, lines."""

from __future__ import annotations

import pytest

from bonmf_pipe.errors import ConfigError, InputError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.ingest import IngestSettings, detect_edition, ingest
from bonmf_pipe.pipeline.ingest.formats import OCCUPATIONS_100K

from . import editions


def run(folder, tmp_path, **kwargs):
    store = Store.open(tmp_path / "store", create=True)
    return store, ingest(store, IngestSettings(path=folder, **kwargs))


def rejects(store):
    return {(r["source"], r["line"]): r["reason"] for r in store.read_table("rejects").to_pylist()}


def codes(store):
    return {key: reason.split(":")[0] for key, reason in rejects(store).items()}


def by_id(store, table, key="item_id"):
    return {r[key]: r for r in store.read_table(table).to_pylist()}


def ratings(store):
    return [tuple(r.values()) for r in store.read_table("ratings").to_pylist()]


def test_detect_each_edition(tmp_path):
    assert detect_edition(editions.ml_100k(tmp_path)) == "ml-100k"
    assert detect_edition(editions.ml_1m(tmp_path)) == "ml-1m"
    assert detect_edition(editions.ml_10m(tmp_path)) == "ml-10m"
    assert detect_edition(editions.ml_csv(tmp_path)) == "ml-latest-small"
    assert detect_edition(editions.ml_csv(tmp_path, "ml-25m")) == "ml-25m"
    renamed = editions.ml_csv(tmp_path, "my-copy")
    (renamed / "README.txt").unlink()
    assert detect_edition(renamed) == "ml-csv"


def test_missing_or_wrong_folders_say_why(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        detect_edition(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no MovieLens files"):
        detect_edition(tmp_path / "empty")
    folder = editions.ml_csv(tmp_path)
    with pytest.raises(InputError, match="movies.dat is missing"):
        run(folder, tmp_path, dataset="ml-1m")
    with pytest.raises(ConfigError, match="--dataset"):
        IngestSettings(path=folder, dataset="ml-2m")
    with pytest.raises(ConfigError, match="placeholders"):
        IngestSettings(path=folder, text_template="{title} {rating}")


def test_ml_100k(tmp_path):
    store, summary = run(editions.ml_100k(tmp_path), tmp_path)
    assert summary.edition == "ml-100k"
    items = by_id(store, "items")
    assert sorted(items) == [1, 2, 3, 5]
    assert (items[1]["title"], items[1]["year"], items[1]["genres"]) == ("Toy Story", 1995, ["Animation", "Children's", "Comedy"])
    assert (items[2]["title"], items[2]["genres"]) == ("Misérables, Les", ["Drama", "Musical"])  # latin-1
    assert (items[3]["title"], items[3]["year"], items[3]["genres"]) == ("unknown", None, [])
    assert (items[5]["year"], items[5]["genres"]) == (1929, ["Drama"])  # year from the release date
    assert items[1]["imdb_id"] is None
    users = by_id(store, "users", "user_id")
    assert sorted(users) == [1, 2]
    assert users[1] == {"user_id": 1, "gender": "M", "age": 24, "occupation": OCCUPATIONS_100K.index("technician"),
                        "zip_code": "85711", "occupation_name": "technician"}
    assert ratings(store) == [(2, 1, 3.0, 891717742), (1, 2, 4.0, 881250950), (1, 1, 2.0, 881250999)]
    assert codes(store) == {
        ("u.item", 4): "malformed",
        ("u.user", 3): "malformed",
        ("u.data", 1): "duplicate",
        ("u.data", 4): "out_of_scale",
        ("u.data", 5): "unknown_item",
        ("u.data", 7): "unknown_user",
        ("u.data", 8): "out_of_scale",
        ("u.data", 9): "malformed",
    }
    r = rejects(store)
    assert r[("u.item", 4)] == "malformed: expected 24 fields, got 3"
    assert r[("u.user", 3)] == "malformed: age is not an integer: 'x'"
    assert r[("u.data", 1)] == "duplicate: user 1 rated movie 1 again; line 6 (latest timestamp) is kept"
    assert r[("u.data", 9)] == "malformed: expected 4 fields, got 2"
    assert summary.rejected == {"duplicate": 1, "malformed": 3, "out_of_scale": 2, "unknown_item": 1, "unknown_user": 1}
    raw = {r["line"]: r["raw"] for r in store.read_table("rejects").to_pylist() if r["source"] == "u.data"}
    assert raw[1] == "1\t1\t5\t881250949"


def test_ml_1m_latin1_users_and_ratings(tmp_path):
    store, summary = run(editions.ml_1m(tmp_path), tmp_path)
    items = by_id(store, "items")
    assert sorted(items) == [1, 2, 3]
    assert items[2]["title"] == "Misérables, Les"
    assert (items[3]["title"], items[3]["year"]) == ("Slingshot, The (Kådisbellan )", 1993)
    assert items[1]["genres"] == ["Animation", "Children's", "Comedy"]
    users = by_id(store, "users", "user_id")
    assert users[1] == {"user_id": 1, "gender": "F", "age": 1, "occupation": 10, "zip_code": "48067",
                        "occupation_name": "K-12 student"}
    assert (users[3]["occupation"], users[3]["occupation_name"]) == (99, None)
    assert ratings(store) == [(1, 1, 5.0, 978300760), (1, 2, 3.0, 978302109), (2, 3, 4.0, 978301968)]
    r = rejects(store)
    assert r == {
        ("movies.dat", 4): "malformed: movie id is not an integer: 'x'",
        ("movies.dat", 5): "malformed: expected 3 fields (item_id::title::genres)",
        ("movies.dat", 6): "duplicate: movie id 2 is already defined on line 2",
        ("ratings.dat", 4): "duplicate: user 2 rated movie 3 again; line 3 (latest timestamp) is kept",
        ("ratings.dat", 5): "out_of_scale: rating 0 is not in 1..5 (whole stars)",
        ("ratings.dat", 6): "malformed: rating is not a number: 'x'",
    }
    assert summary.ratings == 3 and summary.ratings_present


def test_ml_10m_half_stars_and_tags(tmp_path):
    store, summary = run(editions.ml_10m(tmp_path), tmp_path)
    assert summary.edition == "ml-10m"
    items = by_id(store, "items")
    assert (items[2]["title"], items[2]["year"]) == ("Amélie (Fabuleux destin d'Amélie Poulain, Le)", 2001)
    assert (items[3]["title"], items[3]["year"], items[3]["genres"]) == ("Some Series", 2006, [])
    assert items[1]["tags"] == ["pixar", "fun"]  # "Pixar" and "pixar" are one tag, applied twice
    assert items[2]["tags"] == ["paris"]
    assert items[1]["text"] == "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. Tags: pixar, fun."
    assert items[3]["text"] == "Some Series (2006)."
    assert store.read_table("tags").num_rows == 4 == summary.tag_applications
    assert ratings(store) == [(1, 1, 4.5, 838985046), (1, 2, 0.5, 838983525), (2, 3, 5.0, 838983392)]
    assert codes(store) == {
        ("tags.dat", 5): "unknown_item",
        ("tags.dat", 6): "malformed",
        ("ratings.dat", 4): "out_of_scale",
        ("ratings.dat", 5): "out_of_scale",
        ("ratings.dat", 6): "malformed",
    }
    assert rejects(store)[("ratings.dat", 5)] == "out_of_scale: rating 2.25 is not in 0.5..5.0 in half stars"
    assert sorted(by_id(store, "users", "user_id")) == [1, 2, 15, 20]  # no users file: from ratings and tags


def test_csv_edition_quotes_links_tags_and_duplicates(tmp_path):
    store, summary = run(editions.ml_csv(tmp_path), tmp_path)
    items = by_id(store, "items")
    assert sorted(items) == [1, 11, 99, 27008, 40697, 171749]
    assert (items[11]["title"], items[11]["year"]) == ("American President, The", 1995)
    assert items[99]["title"] == 'Say "Hi", Bob'
    assert (items[27008]["title"], items[27008]["year"]) == ("From Dusk Till Dawn 2: Texas Blood Money", 1999)
    assert (items[40697]["title"], items[40697]["year"]) == ("Babylon 5", None)
    assert (items[171749]["title"], items[171749]["year"], items[171749]["genres"]) == ("Death Note: Desu nôto", 2006, [])
    assert (items[1]["imdb_id"], items[1]["tmdb_id"]) == ("tt0114709", 862)
    assert (items[40697]["imdb_id"], items[40697]["tmdb_id"]) == ("tt0105946", None)
    assert items[11]["tags"] == ["politics, romance"]
    assert items[11]["text"] == "American President, The (1995). Genres: Comedy, Drama, Romance. Tags: politics, romance."
    assert items[40697]["text"] == "Babylon 5. Genres: Sci-Fi."
    assert ratings(store) == [
        (1, 1, 4.0, 964982703), (1, 11, 4.5, 964981247), (2, 1, 3.5, 964982224),
        (3, 40697, 1.0, 964982400), (4, 99, 0.5, 964982402),
    ]
    r = rejects(store)
    assert r == {
        ("movies.csv", 7): "malformed: expected 3 fields (movieId,title,genres)",
        ("links.csv", 5): "unknown_item: movie 12345 is not in movies.csv",
        ("tags.csv", 6): "unknown_item: movie 77 is not in movies.csv",
        ("ratings.csv", 5): "out_of_scale: rating 7.0 is not in 0.5..5.0 in half stars",
        ("ratings.csv", 6): "unknown_item: movie 555 is not in movies.csv",
        ("ratings.csv", 7): "duplicate: user 1 rated movie 1 again; line 2 (latest timestamp) is kept",
        ("ratings.csv", 8): "duplicate: user 3 rated movie 40697 again; line 9 (latest timestamp) is kept",
        ("ratings.csv", 10): "malformed: user id is not an integer: 'three'",
        ("ratings.csv", 11): "malformed: expected 4 fields, got 3",
        ("ratings.csv", 12): "malformed: empty line",
    }
    stats = {f.source: (f.rows_read, f.rows_kept) for f in summary.files}
    assert stats == {"movies.csv": (7, 6), "links.csv": (4, 3), "tags.csv": (5, 4), "ratings.csv": (12, 5)}
    assert (summary.items, summary.users, summary.ratings) == (6, 4, 5)


def test_csv_header_is_checked(tmp_path):
    folder = editions.ml_csv(tmp_path)
    (folder / "ratings.csv").write_text("1,1,4.0,964982703\n")
    with pytest.raises(InputError, match="line 1: expected the header 'userId,movieId,rating,timestamp'"):
        run(folder, tmp_path)


def test_template_and_max_tags_settings(tmp_path):
    store, _ = run(editions.ml_10m(tmp_path), tmp_path, text_template="{title}: {tags}", max_tags=1)
    items = by_id(store, "items")
    assert items[1]["tags"] == ["pixar"]
    assert items[1]["text"] == "Toy Story: pixar"
    assert items[3]["text"] == "Some Series"
