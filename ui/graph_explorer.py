"""Model Explorer inside the dashboard, on the dashboard's own port: its prebuilt web app is registered as a
Streamlit component directory, so Streamlit serves it at ``component/<name>/``; each graph view is a folder of
prebuilt JSON files (written by the graph worker) beside it. No second server, nothing fetched from another host.

The web app expects Model Explorer's Flask server behind ``/api/...``. A small script put in front of the app
answers those calls from the static files instead: graphs and node data come from ``views/<token>/``, the
extension list names only the built-in JSON loader, and the update check (``/api/v1/check_new_version``, which
the Flask server forwards to PyPI and GitHub) gets an empty answer at once. Everything else under ``/api`` is
refused, so the file-reading and model-converting endpoints of the Flask server do not exist here at all.
The fonts the page would load from fonts.gstatic.com are dropped (the page falls back to local fonts).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

import streamlit as st
import streamlit.components.v1 as components

from core.io.disk import DiskLimits, evict_least_recent, mark_used
from core.io.files import prebuilt_path
from core.io.model import cache_dir
from core.jobs.graph import graph_view_isolated
from ui import services

COMPONENT = "model_explorer"
VIEWS = "views"
PATCH_VERSION = 5  # bump when patch_index / patch_app changes: the patched copy in the cache is made once per version
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_LOCK = threading.Lock()
_ROOT: Path | None = None
_VIEWS: dict = {}  # (run id, variant, results mtime, scan id) -> the worker's summary, with its "token"

# Runs before the app: a <base> for wherever the folder is served, and fetch / EventSource answered locally.
SHIM = """<script>
(function () {
  // The app's router expects to be served at its base folder ("/"), not at ".../index.html" (which Streamlit must
  // name, as it serves files, not folders): show the folder's URL before the app starts, keeping the query.
  var base = location.pathname.replace(/[^/]*$/, "");
  document.write('<base href="' + base + '">');
  history.replaceState(history.state, "", base + location.search + location.hash);
  var view = new URLSearchParams(location.search).get("fw_view") || "";
  if (!/^[A-Za-z0-9_-]{16,64}$/.test(view)) { view = ""; }
  var folder = base + "views/" + view + "/";
  try {
    localStorage.setItem("sync_navigation_match_node_id_highlight_diffs", "true");
    // Model Explorer hides constant nodes by default ("Const", "pseudo_const", ... for TFLite); the ONNX adapter
    // labels them "Initializer", so each weight, scale and zero point got a node of its own. Hide those too, as a
    // default only: a user who saves Model Explorer's settings keeps theirs.
    if (localStorage.getItem("model_explorer_settings") === null) {
      localStorage.setItem("model_explorer_settings", JSON.stringify({hide_op_nodes_with_labels:
        "Const,no_value,pseudo_const,pseudo_qconst,ReadVariableOp,Initializer"}));
    }
  } catch (e) {}
  var realFetch = window.fetch.bind(window);
  function reply(body, status) {
    return Promise.resolve(new Response(JSON.stringify(body),
      {status: status || 200, headers: {"Content-Type": "application/json"}}));
  }
  window.fetch = function (input, init) {
    var url = new URL(typeof input === "string" ? input : input.url, location.href);
    if (url.origin !== location.origin || !/^\\/api(post|stream)?\\//.test(url.pathname)) {
      return realFetch(input, init);
    }
    var index = parseInt(url.searchParams.get("graph_index") || url.searchParams.get("node_data_index") || "0", 10);
    switch (url.pathname) {
      case "/api/v1/get_extensions":
        return reply([{fileExts: ["json"], type: "adapter", id: "builtin_json", name: "JSON adapter",
                       description: "Featherweight's prebuilt graphs"}]);
      case "/api/v1/check_new_version":
        return reply({version: "", runningVersion: "", releaseUrl: "", desktopAppUrl: ""});
      case "/api/v1/load_graphs_json":
        return realFetch(folder + "graph_" + index + ".json");
      case "/api/v1/load_node_data":
        return realFetch(folder + "node_data_" + index + ".json").then(function (r) { return r.text(); })
          .then(function (text) { return reply({content: text}); });
      default:
        return reply({error: "not available in Featherweight"}, 404);
    }
  };
  var RealEventSource = window.EventSource;
  window.EventSource = function (url, options) {
    if (/^\\/apistream\\//.test(String(url))) {
      return {addEventListener: function () {}, removeEventListener: function () {}, close: function () {}};
    }
    return new RealEventSource(url, options);
  };
})();
</script>"""


def _version() -> str:
    try:
        return metadata.version("ai-edge-model-explorer")
    except metadata.PackageNotFoundError:
        return "unknown"


def patch_index(html: str) -> str:
    """Model Explorer's index.html, made to run from a sub-folder with no request leaving the server."""
    html = re.sub(r"<link rel=\"preconnect\"[^>]*>", "", html)
    html = re.sub(r"@font-face\{[^}]*https?://[^}]*\}", "", html)
    html = html.replace('href="/static_files/', 'href="static_files/').replace("url(/static_files/",
                                                                             "url(static_files/")
    html = html.replace('<base href="/">', SHIM, 1)
    if SHIM not in html:
        raise RuntimeError("Model Explorer's index.html has changed: no <base href=\"/\"> to replace")
    return html


# The info panel (370 px) starts collapsed: beside the dashboard's sidebar each pane is about 490 px wide at 1400 px,
# and the open panel covered three quarters of it. Its own toggle (the chevron at the pane's edge) opens it. Model
# Explorer has no setting for it (its `hideInfoPanel` config is only for embedders), so the app's info-panel class
# is patched: it starts hidden at width 0 and remembers the default width to open to.
_PANEL = re.compile(r"curSearchResults=void 0;width=([A-Za-z_$][\w$]*);minWidth=\1;")


def patch_app(script: str) -> str:
    """Model Explorer's main script with the info panel starting collapsed; unchanged when this version's code is
    not the one patched for (the panel then starts open, as before)."""
    found = _PANEL.search(script)
    if not found or script.count("resizing=!1;hide=!1;") != 1 or \
            script.count("savedWidth=0;visualizerThemeService") != 1:
        return script
    width = found.group(1)
    script = script.replace(found.group(0), "curSearchResults=void 0;width=0;minWidth=0;", 1)
    script = script.replace("resizing=!1;hide=!1;", "resizing=!1;hide=!0;", 1)
    return script.replace("savedWidth=0;visualizerThemeService", f"savedWidth={width};visualizerThemeService", 1)


def web_root() -> Path:
    """The served folder: a copy of Model Explorer's web app with the patched index.html, made once per version
    in the cache, plus ``views/``."""
    global _ROOT
    with _LOCK:
        if _ROOT is not None and (_ROOT / "index.html").is_file():
            return _ROOT
        import model_explorer  # only its folder: the package's server is never started

        source = Path(model_explorer.__file__).parent / "web_app"
        root = cache_dir() / f"model-explorer-{_version()}-{PATCH_VERSION}"
        if not (root / "index.html").is_file():
            staging = root.with_name(root.name + f".tmp-{secrets.token_hex(4)}")
            shutil.copytree(source, staging)
            index = staging / "index.html"
            index.write_text(patch_index(index.read_text(encoding="utf-8")), encoding="utf-8")
            for script in staging.glob("main-*.js"):
                script.write_text(patch_app(script.read_text(encoding="utf-8")), encoding="utf-8")
            for sheet in staging.glob("*.css"):  # its fonts and icons, from beside the sheet
                sheet.write_text(sheet.read_text(encoding="utf-8").replace("url(/static_files/", "url(static_files/"),
                                 encoding="utf-8")
            (staging / VIEWS).mkdir()
            try:
                staging.rename(root)
            except OSError:  # another process made it first
                shutil.rmtree(staging, ignore_errors=True)
        (root / VIEWS).mkdir(exist_ok=True)
        _ROOT = root
        return root


def register() -> str:
    """Register the folder with Streamlit (idempotent) and return the URL path it is served under (absolute,
    under the server's ``server.baseUrlPath``)."""
    components.declare_component(COMPONENT, path=str(web_root()))
    base = str(st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base + '/' if base else ''}component/{__name__}.{COMPONENT}/"


def new_view_dir() -> tuple[str, Path]:
    """A fresh view folder under the served root, named by an unguessable token (the URL is the capability); older
    views beyond FEATHERWEIGHT_VIEW_CACHE_MB are removed, least recently drawn first (a page rebuilds one)."""
    token = secrets.token_urlsafe(18)
    views = web_root() / VIEWS
    folder = views / token
    folder.mkdir(parents=True)
    evict_least_recent([p for p in views.iterdir() if p.is_dir()], DiskLimits.from_env().view_cache_bytes,
                       keep=[folder])
    return token, folder


def view_dir(token: str) -> Path | None:
    """The folder of an existing view, or None (unknown or malformed token)."""
    if not _TOKEN.match(token or ""):
        return None
    folder = web_root() / VIEWS / token
    return folder if (folder / "view.json").is_file() else None


def view_url(token: str, *, focus: str | None = None) -> str:
    """The iframe URL of a view (a path on the dashboard's own host and port); `focus` selects
    a node in both panes (mapped nodes share the baseline's id)."""
    folder = view_dir(token)
    if folder is None:
        raise FileNotFoundError(f"no graph view {token!r}")
    data = json.loads((folder / "view.json").read_text(encoding="utf-8"))
    if focus:
        for pane in data.get("uiState", {}).get("paneStates", []):
            pane["selectedNodeId"] = focus
    query = f"fw_view={token}&data={quote(json.dumps(data, separators=(',', ':')))}"
    return f"{register()}index.html?{query}"


def show(token: str, *, height: int = 900, focus: str | None = None) -> None:
    """Draw a view in an iframe."""
    st.iframe(view_url(token, focus=focus), height=height)


def graph_view(run_id: str, variant: str, scan_id: str | None = None) -> dict:
    """The Graph page's view of one variant of a run this session may open, built once per results file in a
    worker (`core.jobs.graph`): the summary it returned, with the view's ``token``.

    Raises:
        BadInputError: a run (or scan) this session may not open; FeatherweightError: the worker failed.
    """
    run_dir = services.run_dir(run_id)  # refuses a run of another owner
    scan_dir = services.run_dir(scan_id) if scan_id else None
    key = (run_id, variant, services.results_mtime(run_id), scan_id)
    with _LOCK:
        cached = _VIEWS.get(key)
    if cached is not None and view_dir(cached["token"]) is not None:
        mark_used(view_dir(cached["token"]))
        return cached
    prebuilt = prebuilt_path(run_dir, "graph", variant)
    token, folder = new_view_dir()
    try:
        if scan_id is None and (prebuilt / "summary.json").is_file():  # a reference run: built with the gallery
            shutil.copytree(prebuilt, folder, dirs_exist_ok=True)
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        else:
            summary = graph_view_isolated(run_dir, variant, folder, sensitivity_dir=scan_dir)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    summary["token"] = token
    with _LOCK:
        _VIEWS[key] = summary
    return summary


__all__ = ["COMPONENT", "graph_view", "new_view_dir", "patch_app", "patch_index", "register", "show", "view_dir",
           "view_url", "web_root"]
