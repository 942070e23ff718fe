"""Every plotly figure builder and the HTML report (no Streamlit)."""
