"""AppTest fixtures: a fresh run store per test (FEATHERWEIGHT_HOME), the app under test, and runs to compare
(a synthetic one with known numbers, and a real one measured by the pipeline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app_support import OWNER

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app.py")


@pytest.fixture
def fw_home(tmp_path, monkeypatch):
    """An empty run store for this test; job runners started against it are stopped afterwards."""
    home = tmp_path / "home"
    monkeypatch.setenv("FEATHERWEIGHT_HOME", str(home))
    yield home
    from ui import services

    services.shutdown_all()


@pytest.fixture
def make_app(fw_home):
    """A factory of AppTests of app.py (one per browser tab), all with the same owner unless told otherwise."""
    from streamlit.testing.v1 import AppTest

    def make(owner: str | None = OWNER, **state):
        at = AppTest.from_file(APP, default_timeout=90)
        if owner:
            at.session_state["fw_owner"] = owner
        for key, value in state.items():
            at.session_state[key] = value
        return at

    return make
