"""Web settings: the Streamlit security baseline holds, and no user's model is shared through st.cache_resource."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Values SECURITY.md promises; the dashboard may add to [theme] but not weaken these.
BASELINE = {
    ("server", "address"): "127.0.0.1",  # loopback unless a workshop says otherwise (README, "Workshop mode")
    ("server", "allowedHosts"): ["localhost", "127.0.0.1", "::1"],  # DNS rebinding: no session for other names
    ("server", "maxUploadSize"): 200,
    ("server", "enableXsrfProtection"): True,
    ("server", "enableCORS"): True,
    ("server", "fileWatcherType"): "none",
    ("server", "runOnSave"): False,
    ("server", "enableStaticServing"): False,
    ("client", "showErrorDetails"): "none",
    ("browser", "gatherUsageStats"): False,
    ("runner", "postScriptGC"): False,  # availability: a full GC per rerun took 58% of a 10-session server's CPU
}
# Parameter names that would make a cached resource per-user content (an upload, a model, its bytes).
USER_CONTENT_PARAMS = {"data", "content", "upload", "uploaded", "file", "file_bytes", "raw", "model", "model_bytes",
                       "choice", "model_choice", "filename"}


def test_streamlit_config_keeps_the_security_baseline():
    """Loopback address and allowed hosts, upload cap, XSRF + CORS on, no file watcher or run-on-save, error
    details hidden, no usage stats."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text(encoding="utf-8"))
    for (section, key), value in BASELINE.items():
        assert config.get(section, {}).get(key) == value, f"[{section}] {key} must be {value!r}"


def test_streamlit_accepts_the_config_values():
    """Streamlit itself parses the file and reports the same values (an unknown value would be rejected)."""
    import os

    from streamlit import config

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        config.get_config_options(force_reparse=True)
        assert config.get_option("client.showErrorDetails") == "none"
        assert config.get_option("server.enableXsrfProtection") is True
        assert config.get_option("server.maxUploadSize") == 200
        assert config.get_option("server.address") == "127.0.0.1"
        assert config.get_option("server.allowedHosts") == ["localhost", "127.0.0.1", "::1"]
    finally:
        os.chdir(cwd)
        config.get_config_options(force_reparse=True)


def test_no_user_content_in_cache_resource():
    """Functions cached with st.cache_resource (shared by every session) take no upload, model or file
    parameter: a user's model is never shared between sessions, nor mutated under another one."""
    offenders = []
    for path in [ROOT / "app.py", *(ROOT / "pages").glob("*.py"), *(ROOT / "ui").glob("*.py")]:
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if not any("cache_resource" in ast.unparse(d) for d in node.decorator_list):
                continue
            names = {a.arg for a in node.args.args + node.args.kwonlyargs}
            if names & USER_CONTENT_PARAMS:
                offenders.append(f"{path.name}:{node.lineno} {node.name}({', '.join(sorted(names))})")
    assert not offenders, f"st.cache_resource over user content: {offenders}"


def test_make_run_serves_loopback_by_default():
    """`make run` binds 127.0.0.1 unless ADDRESS is given (`make -n` prints the command without running it)."""
    import subprocess

    default = subprocess.run(["make", "-n", "run", "STAMP=Makefile"], cwd=ROOT, capture_output=True, text=True)
    workshop = subprocess.run(["make", "-n", "run", "STAMP=Makefile", "ADDRESS=0.0.0.0"], cwd=ROOT,
                              capture_output=True, text=True)
    assert "--server.address 127.0.0.1 " in default.stdout, default.stdout + default.stderr
    assert "--server.address 0.0.0.0 " in workshop.stdout, workshop.stdout + workshop.stderr
