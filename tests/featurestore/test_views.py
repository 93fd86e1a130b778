"""The view table of featurestore/views.py: file views with TIMESTAMPs, and a featurestore
that imports no stage."""

import ast
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import bonmf_pipe.featurestore as featurestore
from bonmf_pipe.featurestore import Store
from bonmf_pipe.featurestore.sql import query
from bonmf_pipe.featurestore.views import ABLATION_RESULTS, ABLATIONS_DIR, EVALUATION, FILE_VIEWS, all_views


def test_run_views_show_created_at_as_a_timestamp_for_old_and_new_runs(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    old, new = store.runs_dir / "20250101-000000-old", store.runs_dir / "20260101-000000-new"
    old.mkdir(parents=True)
    new.mkdir(parents=True)
    pq.write_table(pa.table({"run_id": ["old"], "created_at": [1735689600.5], "test_rmse": [0.9]}), old / "summary.parquet")
    stamp = pa.array([1767225600000], pa.timestamp("ms", tz="UTC"))
    pq.write_table(pa.table({"run_id": ["new"], "created_at": stamp, "status": ["done"]}), new / "summary.parquet")
    pq.write_table(pa.table({"run_id": ["new"], "metric": ["rmse"], "value": [0.8]}), new / EVALUATION)
    (store.root / ABLATIONS_DIR / "a1").mkdir(parents=True)
    pq.write_table(pa.table({"ablation_id": ["a1"], "features": ["text"]}), store.root / ABLATIONS_DIR / "a1" / ABLATION_RESULTS)
    views = all_views(store)
    assert {"runs", "evaluations", "ablations"} <= set(views) and "metrics" not in views
    rows = query(store, "SELECT run_id, typeof(created_at) AS t, epoch(created_at) AS s, status FROM runs ORDER BY run_id")
    assert rows.to_pylist() == [
        {"run_id": "new", "t": "TIMESTAMP WITH TIME ZONE", "s": 1767225600.0, "status": "done"},
        {"run_id": "old", "t": "TIMESTAMP WITH TIME ZONE", "s": 1735689600.5, "status": None},
    ]
    assert query(store, "SELECT ablation_id FROM ablations").to_pylist() == [{"ablation_id": "a1"}]
    assert set(FILE_VIEWS) == {"runs", "metrics", "predictions", "evaluations", "ablations"}


def test_featurestore_imports_no_stage():
    stages = ("bonmf_pipe.pipeline", "bonmf_pipe.trainer", "bonmf_pipe.evaluation", "bonmf_pipe.cli", "bonmf_pipe.render")
    for path in Path(featurestore.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.startswith(stages)], (path.name, names)
