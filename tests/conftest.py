"""Shared fixtures. Tests that need ../shared/data skip when it is absent, except on CI
(BONMF_REQUIRE_SHARED_DATA=1), where they fail instead."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("BONMF_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        if os.environ.get("BONMF_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{path} is missing but BONMF_REQUIRE_SHARED_DATA=1 (CI needs ../shared/data)")
        pytest.skip(f"{path} is absent: the real MovieLens data lives beside the checkout in ../shared/data")
    return path


@pytest.fixture(scope="session")
def ml_latest_small() -> Path:
    return shared_path("ml-latest-small")


@pytest.fixture(scope="session")
def ml_1m() -> Path:
    return shared_path("ml-1m")


@pytest.fixture(scope="session")
def ml_1m_posters() -> Path:
    return shared_path("ml-1m-posters")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may reach a network: the hub libraries are told to stay offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def encoded_small_store(tmp_path_factory, ml_latest_small, ml_1m_posters):
    """ml-latest-small with the ML-1M posters, ingested and encoded with the offline text
    and image encoders on the CPU: built ONCE per test session (encoding takes minutes).

    Shared by every test that asks for it: tests may add runs (and ablations) to it, but
    must not change its tables or features, nor rely on which run is the latest.
    """
    from bonmf_pipe.featurestore import Store
    from bonmf_pipe.pipeline.encode import EncodeSettings, encode
    from bonmf_pipe.pipeline.ingest import IngestSettings, ingest

    with pytest.MonkeyPatch.context() as mp:  # the autouse _offline fixture is per test
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        store = Store.open(tmp_path_factory.mktemp("encoded-small") / "store", create=True)
        ingest(store, IngestSettings(path=ml_latest_small, posters=ml_1m_posters))
        encode(store, EncodeSettings(modalities=("text", "image"), device="cpu"))
    return store
