"""Streamlit-side building blocks shared by the pages: services, cached loaders, the sidebar and widget
functions (`*_ui()` return plain values). Everything that needs no Streamlit lives in `core`."""
