"""Featherweight: the studio's entry point. Navigation over pages/, the shared sidebar, nothing else."""

from pathlib import Path

import streamlit as st

from ui.services import restore_session, serve_visitor
from ui.sidebar import sidebar_ui

# A local favicon: a ":material/..." icon (or an emoji) makes every page load fetch it from fonts.gstatic.com
# (or a CDN), which fails offline and sends a request off the machine.
st.set_page_config(page_title="Featherweight", page_icon=str(Path(__file__).parent / "ui" / "assets" / "favicon.svg"),
                   layout="wide")

# One line per page, grouped in sidebar sections; the first page is the home page.
PAGES = {
    "Studio": [
        st.Page("pages/model.py", title="Model", icon=":material/deployed_code:", default=True),
        st.Page("pages/optimize.py", title="Optimize", icon=":material/tune:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/scatter_plot:"),
        st.Page("pages/history.py", title="History", icon=":material/history:"),
    ],
    "Deep dives": [
        st.Page("pages/insight.py", title="Insight", icon=":material/troubleshoot:"),
        st.Page("pages/cost.py", title="Cost", icon=":material/payments:"),
        st.Page("pages/graph.py", title="Graph", icon=":material/account_tree:"),
    ],
    "Workshop": [
        st.Page("pages/learn.py", title="Learn", icon=":material/school:"),
        st.Page("pages/teacher.py", title="Teacher", icon=":material/co_present:"),
    ],
}

st.logo(str(Path(__file__).parent / "ui" / "assets" / "logo.svg"), size="large")
page = st.navigation(PAGES)
serve_visitor()  # this run's worker requests count as this session's (the pool's caps, its place in line)
restore_session()
sidebar_ui()
page.run()
