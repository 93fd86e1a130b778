"""`bonmf-pipe encode` and `bonmf-pipe similar` through typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from bonmf_pipe.cli import app
from bonmf_pipe.featurestore.features import resolve_feature_set

from .conftest import N_TEXTS

runner = CliRunner()


def test_encode_cli_encodes_only_what_is_missing(encoded, copy_store):
    store = copy_store(encoded.root)
    result = runner.invoke(app, ["encode", "--store", str(store.root), "--modality", "text,image", "--cpu-threads", "1"])
    assert result.exit_code == 0, result.output
    assert "nothing new to encode: no model was loaded" in result.output
    assert encoded.summary.of("text").encoder_key in result.output
    # A new text encoder setting (float32 storage) is a new feature set: all texts encoded, no image.
    result = runner.invoke(app, ["encode", "--store", str(store.root), "--modality", "text", "--store-dtype", "float32",
                                 "--batch-size", "128", "--cpu-threads", "1"])
    assert result.exit_code == 0, result.output
    fs = resolve_feature_set(store, "text")
    assert fs.key != encoded.summary.of("text").encoder_key and fs.rows == N_TEXTS and fs.dtype == "float32"
    assert f"{N_TEXTS:,}" in result.output


def test_encode_cli_reports_bad_options_in_red_and_exits_1(encoded, tmp_path):
    result = runner.invoke(app, ["encode", "--store", str(encoded.root), "--shard", "2/2"])
    assert result.exit_code == 1 and "0 <= i < N" in result.output
    result = runner.invoke(app, ["encode", "--store", str(encoded.root), "--shard", "half"])
    assert result.exit_code == 1 and "use i/N" in result.output
    result = runner.invoke(app, ["encode", "--store", str(tmp_path / "none")])
    assert result.exit_code == 1 and "bonmf-pipe ingest" in result.output


def test_similar_cli(encoded):
    result = runner.invoke(app, ["similar", "Toy Story (1995)", "--modality", "text", "-k", "3", "--store", str(encoded.root)])
    assert result.exit_code == 0, result.output
    assert "nearest to Toy Story (1995) by text" in result.output and "Toy Story 2" in result.output
    result = runner.invoke(app, ["similar", "1", "--modality", "image", "--store", str(encoded.root)])
    assert result.exit_code == 0 and "Toy Story 2" in result.output
    result = runner.invoke(app, ["similar", "Toy Stroy", "--store", str(encoded.root)])
    assert result.exit_code == 1 and "Did you mean" in result.output
