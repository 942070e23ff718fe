"""Parsing the events Streamlit widgets return (chart selections), so pages stay widgets and rendering."""

from __future__ import annotations

from core.views.vega import PICK


def clicked_variant(event) -> str | None:
    """The variant name of the first selected point in a Vega-Lite selection event (st.vega_lite_chart on_select),
    if any: the Pareto chart's markers carry the point selection `PICK` on the field `name`
    (`core.views.vega.pareto_spec`), so the event reads {"selection": {PICK: [{"name": ...}]}}."""
    if event is None:
        return None
    selection = event.get("selection") if isinstance(event, dict) else getattr(event, "selection", None)
    if selection is None:
        return None
    points = selection.get(PICK) if isinstance(selection, dict) else getattr(selection, PICK, None)
    for point in points or []:
        name = point.get("name") if isinstance(point, dict) else None
        if name:
            return str(name)
    return None
