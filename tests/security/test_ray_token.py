"""The token of a local Ray runtime is private to its user (0600 in a 0700 ~/.ray), not world-readable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh HOME with the usual umask and no Ray auth variables."""
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    old = os.umask(0o022)
    yield tmp_path
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_token_is_made_private(home):
    """No token yet: one is written 0600 (64 hex characters, Ray's format) in a 0700 ~/.ray."""
    from core.pipeline.ray import private_ray_token

    path = private_ray_token()
    assert path == home / ".ray" / "auth_token"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0


def test_an_existing_readable_token_is_narrowed_and_kept(home):
    """A token an older Ray left 0644 becomes 0600 with the same content (a running cluster keeps working)."""
    from core.pipeline.ray import private_ray_token

    path = home / ".ray" / "auth_token"
    path.parent.mkdir()
    path.write_text("a" * 64)
    path.chmod(0o644)
    assert private_ray_token() == path
    assert _mode(path) == 0o600 and path.read_text() == "a" * 64


def test_nothing_is_written_when_ray_auth_is_off_or_given(home, monkeypatch):
    """RAY_AUTH_MODE=disabled, or a token in RAY_AUTH_TOKEN: no file is made."""
    from core.pipeline.ray import private_ray_token

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert private_ray_token() is None
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "b" * 64)
    assert private_ray_token() is None
    assert not (home / ".ray").exists()


_START = """
import os, stat, sys
os.umask(0o022)
import ray
if sys.argv[1] == "featherweight":
    from core.pipeline.ray import ray_init
    ray_init()
else:
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
path = os.path.join(os.environ["HOME"], ".ray", "auth_token")
print(oct(stat.S_IMODE(os.stat(path).st_mode)), os.environ.get("RAY_AUTH_MODE"))
ray.shutdown()
"""


@pytest.mark.slow
def test_a_real_local_ray_runtime_uses_a_private_token(tmp_path, start="featherweight"):
    """A real local runtime started by ray_init() runs with token auth and a 0600 token (a plain ray.init(), the
    script's other branch, left it 0644 with Ray 2.60: the measurement in SECURITY.md)."""
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(HOME=str(tmp_path), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", _START, start], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    mode, auth = done.stdout.split()[-2:]
    assert auth == "token"
    assert mode == ("0o600" if start == "featherweight" else "0o644")
