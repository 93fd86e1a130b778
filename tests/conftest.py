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
