"""Parsing the events Streamlit widgets return (chart selections), so pages stay widgets and rendering."""

from __future__ import annotations


def clicked_variant(event) -> str | None:
    """The variant name of the first point in a plotly selection event (st.plotly_chart on_select), if any.

    Every marker trace of `core.views.charts.pareto_figure` puts the variant name first in its customdata.
    """
    if event is None:
        return None
    selection = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    if selection is None:
        return None
    points = selection.get("points") if isinstance(selection, dict) else getattr(selection, "points", None)
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(custom, (list, tuple)) and custom:
            return str(custom[0])
    return None
