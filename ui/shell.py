"""Make every page run inside app.py's shell (navigation, sidebar, session restore), even on a deep link.

Streamlit quirk (1.67): a process starts in legacy multipage mode whenever a ``pages/`` folder sits next to the
main script, and leaves it only once some session has executed ``st.navigation``. Until then, a deep link such as
``/compare`` (a reload, or a bookmark right after a server restart) runs ``pages/compare.py`` on its own, without
app.py. `ensure_app_shell` notices that case and runs app.py instead, which then runs the page as usual.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

APP = Path(__file__).resolve().parents[1] / "app.py"


def _legacy_mode() -> bool:
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode
        return False
    return bool(PagesManager.uses_pages_directory)


def ensure_app_shell() -> None:
    """Call first in a page: if Streamlit ran the page without app.py, run app.py (and this page through it),
    then stop this outer run."""
    if not _legacy_mode():
        return
    code = compile(APP.read_text(encoding="utf-8"), str(APP), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(APP)})  # noqa: S102 - our own entry point
    st.stop()
