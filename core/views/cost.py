"""The cost figure: cost per million inferences against energy per inference, measured or estimated, with the
variants that do not fit a device in grey (colours from `core.views.charts`)."""

from __future__ import annotations

from core.format import format_bytes, format_money
from core.views.charts import ACCENT, GRID, INK, MUTED, OUT_OF_BUDGET, empty_figure, label_positions, layout


def cost_figure(frame, *, device: str | None = None, height: int = 440, unit: str = "inference"):
    """Cost per million inferences (x) vs energy per inference (y) for each ok variant; the marker says whether
    energy was measured (filled) or estimated (open); variants that do not fit `device` are grey. `unit` names
    what is priced (`core.results.cost.cost_unit`: "generated token" for a decoder)."""
    import plotly.graph_objects as go


    if frame is None or frame.empty:
        return empty_figure("No variants in this run yet.")
    rows = frame[(frame["status"].fillna("ok") == "ok") & frame["usd_per_million"].notna()
                 & frame["energy_mj"].notna()].reset_index(drop=True)
    if rows.empty:
        return empty_figure("No measured variants: cost and energy need a measured throughput.")
    fit_column = f"fits: {device}" if device else None
    x_top = float(rows["usd_per_million"].max()) * 1.15 or 1.0
    y_top = float(rows["energy_mj"].max()) * 1.15 or 1.0
    positions = dict(zip(rows["name"], label_positions(rows["usd_per_million"], rows["energy_mj"], list(rows["name"]),
                                                       x_range=(0.0, x_top), y_range=(0.0, y_top),
                                                       height_px=max(200, height - 120))))
    fig = go.Figure()
    for basis, symbol in (("measured", "circle"), ("estimated", "circle-open")):
        part = rows[rows["energy_basis"] == basis]
        if part.empty:
            continue
        inside = part[fit_column].fillna(False).astype(bool) if fit_column in part else None
        colors = [ACCENT if inside is None or ok else OUT_OF_BUDGET for ok in (inside if inside is not None
                                                                               else [True] * len(part))]
        custom = [[n, format_money(m), format_money(s), f"{e:.4g} mJ", b, f"{g:.4g} g", format_bytes(w), a]
                  for n, m, s, e, b, g, w, a in zip(part["name"], part["monthly_cost_usd"],
                                                    part["monthly_saving_usd"], part["energy_mj"],
                                                    part["energy_basis"], part["gco2_per_million"].fillna(0),
                                                    part["weight_bytes"], part["energy_assumption"])]
        fig.add_trace(go.Scatter(
            x=part["usd_per_million"], y=part["energy_mj"], mode="markers+text", text=part["name"],
            textposition=[positions[n] for n in part["name"]], cliponaxis=False,
            textfont=dict(color=INK, size=13), name=f"energy {basis}",
            marker=dict(size=16, symbol=symbol, color=colors, line=dict(width=2, color=colors)),
            customdata=custom,
            hovertemplate=(f"<b>%{{customdata[0]}}</b><br>$%{{x:.4g}} per million {unit}s"
                           "<br>%{customdata[1]} a month (saves %{customdata[2]})"
                           f"<br>energy %{{customdata[3]}} per {unit} (%{{customdata[4]}})"
                           "<br>%{customdata[5]} CO2 per million · weights %{customdata[6]}"
                           "<br><i>%{customdata[7]}</i><extra></extra>")))
    batch = rows["batch_size"].iloc[0]
    layout(fig, height=height)
    fig.update_layout(margin=dict(l=10, r=10, t=40, b=10))  # room for the marker legend above
    # Dollars as dollars: plotly's default SI ticks wrote "100μ" for $0.0001.
    fig.update_xaxes(title=f"USD per million {unit}s (batch {batch}; assumed price)", range=[0, x_top],
                     gridcolor=GRID, zerolinecolor=GRID, tickprefix="$", tickformat=",.2~r" if x_top < 1 else ",.2f")
    fig.update_yaxes(title=f"Energy per {unit} (mJ)", range=[0, y_top], gridcolor=GRID, zerolinecolor=GRID,
                     tickformat=",.3~r")
    if device:
        fig.add_annotation(text=f"grey: does not fit {device}", showarrow=False, x=1, y=1.08, xref="paper",
                           yref="paper", xanchor="right", font=dict(color=MUTED, size=12))
    return fig
