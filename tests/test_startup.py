"""A fast CLI: commands that neither train nor encode never import torch, transformers or timm.

Each check runs in a fresh interpreter with a meta-path finder in front of every other: any
attempt to *load* one of the heavy packages is recorded and refused (finding its spec is
allowed, since polars probes for torch that way without importing it), so the command fails
or reports what it loaded. The lazily re-exported names (PEP 562, ``bonmf_pipe.lazy``) must
still resolve to what they were when the packages imported them eagerly.
"""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "timm")

GUARD = textwrap.dedent(
    """
    import importlib.abc, importlib.machinery, json, sys

    HEAVY = {heavy!r}
    tried = []

    class Refuse(importlib.abc.Loader):
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            tried.append(module.__name__)
            raise ImportError(f"test_startup: {{module.__name__}} must not be imported here")

    class Guard(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in HEAVY:
                return importlib.machinery.ModuleSpec(name, Refuse())
            return None

    sys.meta_path.insert(0, Guard())

    if __name__ == "__main__":
        from bonmf_pipe.cli import app

        code = 0
        try:
            app(sys.argv[1:], prog_name="bonmf-pipe")
        except SystemExit as exc:
            code = exc.code or 0
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in HEAVY and sys.modules[m] is not None)
        print("GUARD " + json.dumps({{"code": code, "tried": tried, "loaded": loaded}}))
    """
).format(heavy=HEAVY)


def _run_guarded(tmp_path: Path, *argv: str) -> tuple[dict, str]:
    script = tmp_path / "guarded_cli.py"
    script.write_text(GUARD)
    out = subprocess.run([sys.executable, str(script), *argv], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("GUARD ")]
    assert lines, f"the guarded CLI did not finish:\n{out.stdout}\n{out.stderr}"
    return json.loads(lines[-1][len("GUARD "):]), out.stdout + out.stderr


def test_importing_the_cli_imports_no_heavy_package():
    code = "import bonmf_pipe.cli; print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"
    guarded = "\n".join([GUARD.split("if __name__")[0], code])
    out = subprocess.run([sys.executable, "-c", guarded], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    top = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not top & set(HEAVY), out.stdout
    assert "bonmf_pipe" in top


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["encode", "--help"], ["tune", "--help"]])
def test_help_imports_no_heavy_package(tmp_path, argv):
    result, output = _run_guarded(tmp_path, *argv)
    assert result == {"code": 0, "tried": [], "loaded": []}, output
    assert "Usage" in output


def test_store_commands_run_without_torch(tmp_path):
    """sample, ingest, features import, info, sql, verify, vacuum and features coverage end to
    end on a tiny synthetic MovieLens folder with posters, each in a guarded interpreter."""
    store = str(tmp_path / "store")

    def guarded(*argv: str) -> str:
        result, output = _run_guarded(tmp_path, *argv)
        assert result == {"code": 0, "tried": [], "loaded": []}, f"{argv}:\n{output}"
        return output

    guarded("sample", "--out", "sample", "--users", "30", "--items", "40", "--ratings", "600", "--seed", "3")
    guarded("ingest", "--store", store, "--path", "sample", "--posters", "sample/posters")
    with open(tmp_path / "sample" / "movies.csv", newline="", encoding="utf-8") as f:
        ids = [row["movieId"] for row in csv.DictReader(f)]
    (tmp_path / "vectors.csv").write_text("movieId,a,b,c\n" + "".join(f"{i},{n % 3},1.5,-{n}\n" for n, i in enumerate(ids)))
    guarded("features", "import", "vectors.csv", "--name", "mine", "--key-column", "movieId", "--store", store)
    assert "600" in guarded("sql", "--store", store, "select count(*) as n from ratings")
    for argv in (["info"], ["verify"], ["vacuum"]):
        guarded(*argv, "--store", store)
    assert "mine" in guarded("features", "coverage", "--store", store)


def test_lazy_exports_resolve_to_the_public_objects():
    trainer = importlib.import_module("bonmf_pipe.trainer")
    evaluation = importlib.import_module("bonmf_pipe.evaluation")
    models = importlib.import_module("bonmf_pipe.trainer.models")
    for package in (trainer, evaluation, models):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
            assert name in dir(package)
        with pytest.raises(AttributeError):
            package.no_such_name  # noqa: B018
    # a function named like the module that defines it stays the function, even after the
    # module was imported by its own name
    importlib.import_module("bonmf_pipe.trainer.train")
    importlib.import_module("bonmf_pipe.evaluation.recommend")
    from bonmf_pipe.evaluation import recommend
    from bonmf_pipe.trainer import data, distributed_session, train

    assert isinstance(train, types.FunctionType) and train.__module__ == "bonmf_pipe.trainer.train"
    assert isinstance(recommend, types.FunctionType) and recommend.__module__ == "bonmf_pipe.evaluation.recommend"
    assert distributed_session.__name__ == "session"
    assert isinstance(data, types.ModuleType)  # submodules still import through the package
    from bonmf_pipe.trainer.models import BiasedMF, BoNMF, create_model, model_entry

    assert model_entry("bonmf").factory() is BoNMF and model_entry("svd").factory() is BiasedMF
    assert callable(create_model)
