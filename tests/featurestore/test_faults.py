"""Fault injection and concurrency (issue 10, item 8, the store's side).

Every case must end in the old state, the new state, or a clear error, never a mix, and
``verify`` must agree. Datasets A and B are tiny ml-latest-small folders whose ratings
reference each other's items, so any mix of A's and B's tables shows as rows that
reference unknown items. Faults are injected at every commit point of an ingest (each
``os.replace`` of a manifest, the snapshot file or ``CURRENT``): raised in place of the
rename, and as a SIGKILL right after it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bonmf_pipe.errors import StoreError
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.lock import store_lock
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.featurestore.verify import verify_store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

REPO = Path(__file__).resolve().parents[2]
TABLES = ("items", "users", "tags", "ratings", "rejects")
COUNTS = (
    "SELECT (SELECT count(*) FROM items) AS items, (SELECT count(*) FROM users) AS users, "
    "(SELECT count(*) FROM ratings) AS ratings, "
    "(SELECT count(*) FROM ratings WHERE item_id NOT IN (SELECT item_id FROM items)) AS orphans"
)

# An ingest of argv[2] into the store argv[1] that dies by SIGKILL right after its
# argv[3]-th os.replace (0: never), or holds its commit (touching argv[4]) for argv[5] seconds.
CHILD = """
import os, pathlib, signal, sys, time
real_replace, calls = os.replace, [0]

def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    calls[0] += 1
    if calls[0] == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

if len(sys.argv) > 4:
    commit = Store.commit

    def held(self, writers, operation="commit"):
        pathlib.Path(sys.argv[4]).touch()
        time.sleep(float(sys.argv[5]))
        return commit(self, writers, operation)

    Store.commit = held
for path in sys.argv[2].split(","):
    ingest(Store.open(sys.argv[1]), IngestSettings(path=path))
"""


def _movielens(folder: Path, items: range, users: range, seed: int) -> Path:
    """A small ml-latest-small folder: every user rates every third item (by a seed)."""
    folder.mkdir(parents=True)
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},Movie {i} ({1950 + i % 60}),Drama|Comedy\n" for i in items)
    )
    ratings = ["userId,movieId,rating,timestamp"]
    for u in users:
        for i in items:
            if (u * 7 + i * 3 + seed) % 3 == 0:
                ratings.append(f"{u},{i},{(u + i) % 5 + 1}.0,{1_000_000 + u * 1000 + i}")
    (folder / "ratings.csv").write_text("\n".join(ratings) + "\n")
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n" + "".join(f"{u},{items[u % len(items)]},tag{u},1\n" for u in users)
    )
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Datasets A and B, a store holding A (the template), and each dataset's tables."""
    root = tmp_path_factory.mktemp("faults")
    a = _movielens(root / "A", range(1, 31), range(1, 21), 0)
    b = _movielens(root / "B", range(21, 61), range(1, 26), 1)
    template = Store.open(root / "template", create=True)
    ingest(template, IngestSettings(path=a))
    state_a = _state(template)
    other = root / "with-b"
    shutil.copytree(template.root, other)
    ingest(Store.open(other), IngestSettings(path=b))
    state_b = _state(Store.open(other))
    assert state_a["items"].num_rows == 30 and state_b["items"].num_rows == 40
    return {"A": a, "B": b, "template": template.root, "states": {"A": state_a, "B": state_b}, "root": root}


def _state(store: Store) -> dict:
    return {name: store.read_table(name) for name in TABLES}


def _which(root: Path, states: dict) -> str:
    """'A' or 'B': which dataset the store holds, whole; fails on anything else."""
    now = _state(Store.open(root))
    for name, state in states.items():
        if all(now[t].equals(state[t]) for t in TABLES):
            return name
    raise AssertionError(f"the store at {root} holds neither A nor B: {({t: now[t].num_rows for t in TABLES})}")


def _fresh(world, name: str) -> Path:
    dst = world["root"] / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(world["template"], dst)
    return dst


def _commit_points(world, monkeypatch) -> int:
    """How many os.replace calls an ingest of B makes (each one a commit point)."""
    root = _fresh(world, "count")
    calls = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    ingest(Store.open(root), IngestSettings(path=world["B"]))
    monkeypatch.setattr(os, "replace", real)
    names = [Path(p).name for p in calls]
    assert names[-2:] == [f"{Store.open(root).snapshot.version:08d}.json", "CURRENT"]  # snapshot, then the swap
    assert names.count("manifest.json") == len(TABLES)
    return len(calls)


def test_an_ingest_failing_at_any_commit_point_leaves_the_old_dataset(world, monkeypatch, record_property):
    points = _commit_points(world, monkeypatch)
    survived = 0
    real = os.replace
    for k in range(1, points + 1):
        root = _fresh(world, f"raise-{k}")
        calls = [0]

        def failing(src, dst, *args, **kwargs):
            calls[0] += 1
            if calls[0] == k:
                raise OSError(28, "No space left on device (injected)")
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", failing)
        with pytest.raises(OSError, match="injected"):
            ingest(Store.open(root), IngestSettings(path=world["B"]))
        monkeypatch.setattr(os, "replace", real)
        assert _which(root, world["states"]) == "A", k
        assert verify_store(Store.open(root)).ok, k
        ingest(Store.open(root), IngestSettings(path=world["B"]))  # the locks were released
        assert _which(root, world["states"]) == "B" and verify_store(Store.open(root)).ok
        survived += 1
    record_property("faults_raised", points)
    record_property("faults_raised_survived", survived)


def test_an_ingest_killed_after_any_commit_point_leaves_old_or_new(world, monkeypatch, record_property):
    points = _commit_points(world, monkeypatch)
    seen = []
    for k in range(1, points + 1):
        root = _fresh(world, f"kill-{k}")
        proc = subprocess.run([sys.executable, "-c", CHILD, str(root), str(world["B"]), str(k)], cwd=REPO,
                              capture_output=True, timeout=120)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        which = _which(root, world["states"])
        assert which == ("B" if k == points else "A"), k  # visible only once CURRENT is swapped
        report = verify_store(Store.open(root))
        assert report.ok, (k, report.problems)
        seen.append(which)
        Store.open(root).vacuum()  # removes what the killed ingest left
        assert verify_store(Store.open(root)).problems == ()
    assert seen.count("A") == points - 1 and seen[-1] == "B"
    record_property("faults_killed", points)


def test_a_second_ingest_waits_for_the_first_or_fails_with_no_wait(world):
    root = _fresh(world, "two-ingests")
    marker = root.parent / "two-ingests.held"
    first = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(world["B"]), "0", str(marker), "1.5"],
                             cwd=REPO, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()
            time.sleep(0.02)
        with pytest.raises(StoreError, match=r"busy: process \d+ .*'tables' lock"):
            ingest(Store.open(root, no_wait=True), IngestSettings(path=world["A"]))
        notes = []
        ingest(Store.open(root), IngestSettings(path=world["A"]), notes.append)  # waits, then runs
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
        first.stderr.close()
    assert any("waiting for process" in e.message for e in notes)
    assert _which(root, world["states"]) == "A"  # the second one committed last
    assert verify_store(Store.open(root)).ok


def test_two_ingest_commands_at_once_leave_one_whole_dataset(world):
    root = _fresh(world, "race")
    cmds = [[sys.executable, "-m", "bonmf_pipe.cli", "ingest", "--path", str(world[d]), "--store", str(root)]
            for d in ("B", "A")]
    procs = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        assert p.wait(120) == 0, p.stderr.read().decode()[-2000:]
        p.stderr.close()
    assert _which(root, world["states"]) in ("A", "B")
    assert verify_store(Store.open(root)).ok


def test_queries_during_ingests_see_one_whole_dataset(world, record_property):
    root = _fresh(world, "queries")
    sequence = ",".join(str(world[d]) for d in ("B", "A", "B", "A", "B", "A"))
    writer = subprocess.Popen([sys.executable, "-c", CHILD, str(root), sequence, "0"], cwd=REPO,
                              stderr=subprocess.PIPE)
    expected = {
        (30, 20, world["states"]["A"]["ratings"].num_rows, 0),
        (40, 25, world["states"]["B"]["ratings"].num_rows, 0),
    }
    queries, seen = 0, set()
    try:
        while writer.poll() is None or queries < 5:
            row = query(Store.open(root), COUNTS).to_pylist()[0]
            assert tuple(row.values()) in expected, row
            seen.add(tuple(row.values()))
            queries += 1
    finally:
        if writer.poll() is None:
            writer.kill()
        assert writer.wait(60) == 0, writer.stderr.read().decode()[-2000:]
        writer.stderr.close()
    assert len(seen) == 2 and queries >= 5  # both datasets were seen, never a mix
    assert verify_store(Store.open(root)).ok
    record_property("queries_during_ingests", queries)


def test_two_encodes_of_one_shard_encode_each_item_once(world):
    from bonmf_pipe.pipeline.encode import EncodeSettings, encode

    root = _fresh(world, "two-encodes")
    settings = EncodeSettings(modalities=("text",), device="cpu", cpu_threads=1, batch_size=16)
    second_waits = threading.Event()
    results = {}

    def second():
        def progress(event):
            if "waiting for process" in event.message:
                second_waits.set()

        results["second"] = encode(Store.open(root), settings, progress)

    later = threading.Thread(target=second)

    def hook(event):
        if event.kind == "load":  # the first one holds the lock and has loaded its model
            later.start()
            assert second_waits.wait(60)

    results["first"] = encode(Store.open(root), settings, forward_hook=hook)
    later.join(120)
    first, second_run = results["first"].of("text"), results["second"].of("text")
    assert (first.encoded, first.model_loaded) == (30, True)
    assert (second_run.encoded, second_run.skipped, second_run.model_loaded) == (0, 30, False)
    rows = query(Store.open(root), "SELECT count(*) AS n, count(DISTINCT item_id) AS items FROM features")
    assert rows.to_pylist() == [{"n": 30, "items": 30}]
    assert verify_store(Store.open(root)).ok
    with store_lock(root, "encode-text-0of1", what="encode elsewhere"):
        with pytest.raises(StoreError, match="encode elsewhere"):
            encode(Store.open(root, no_wait=True), settings)


# Appends three feature shards (ids 1-10, 11-20, 21-30) of a synthetic feature set to the store
# argv[1]; dies by SIGKILL right after its argv[2]-th os.replace (0: never).
SHARDS_CHILD = """
import os, signal, sys
import numpy as np
real_replace, calls = os.replace, [0]

def replace(src, dst, *args, **kwargs):
    real_replace(src, dst, *args, **kwargs)
    calls[0] += 1
    if calls[0] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace
from bonmf_pipe.featurestore import Store
from bonmf_pipe.pipeline.encode.shards import FeatureWriter

writer = FeatureWriter(Store.open(sys.argv[1]), "text", "f" * 16, {"model": "synthetic"}, 4, "float32", {})
for start in (1, 11, 21):
    ids = list(range(start, start + 10))
    writer.write(ids, [f"h{i}" for i in ids], np.full((10, 4), start, np.float32))
"""
def _append_shards(root: Path) -> None:
    """What SHARDS_CHILD does, in this process, without a fault."""
    import numpy as np

    from bonmf_pipe.pipeline.encode.shards import FeatureWriter

    writer = FeatureWriter(Store.open(root), "text", "f" * 16, {"model": "synthetic"}, 4, "float32", {})
    for start in (1, 11, 21):
        ids = list(range(start, start + 10))
        writer.write(ids, [f"h{i}" for i in ids], np.full((10, 4), start, np.float32))


FEATURE_ROWS = "SELECT count(*) AS n, count(DISTINCT item_id) AS items, min(vector[1]) AS v FROM features"


def test_feature_shards_killed_at_any_commit_point_are_all_or_nothing(world, record_property):
    """Each shard is two commit points (the shard's rename, then the manifest's): a kill
    between them leaves a shard no reader sees (before the first manifest, a folder no
    reader knows), which the next writer removes."""
    root = _fresh(world, "shards")
    _append_shards(root)
    assert query(Store.open(root), FEATURE_ROWS).to_pylist() == [{"n": 30, "items": 30, "v": 1.0}]
    points = 6
    for k in range(1, points + 1):
        root = _fresh(world, f"shards-{k}")
        proc = subprocess.run([sys.executable, "-c", SHARDS_CHILD, str(root), str(k)], cwd=REPO, capture_output=True)
        assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
        report = verify_store(Store.open(root))
        assert report.ok, (k, report.problems)
        committed = k // 2  # shards whose manifest entry was written before the kill
        if committed:
            rows = query(Store.open(root), FEATURE_ROWS).to_pylist()
            assert rows == [{"n": 10 * committed, "items": 10 * committed, "v": 1.0}], k
        assert [p.reason for p in report.problems if p.severity == "warning"] == (["not in the manifest: left by an "
                                                                                   "interrupted run, never read"]
                                                                                  if k % 2 and k > 1 else []), k
        _append_shards(root)
        assert verify_store(Store.open(root)).problems == (), k  # the orphan shard was removed
    record_property("faults_feature_shards_killed", points)
