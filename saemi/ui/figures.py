"""The page's Plotly figures: the image view (micrograph, particle layer, hover grid) and the histogram.

Heavy results stay on the server: the particle layer is drawn there from the
labels it keeps (:meth:`saemi.service.AnalysisService.particle_layer`); the
page receives the picture and a subsampled label grid for hover look-ups.
"""

import base64
import math

import numpy as np
import plotly.graph_objects as go

from ..overlay import png_bytes
from .calibration import parse_nm_per_pixel
from .numbers import display_unit, format_number
from .particles import METRIC_LABELS, summary_of, table_unit
from ..measure import metric_column

BANNER_COLOUR = "rgba(0, 220, 255, 0.9)"


SCALE_COLOUR = "rgba(60, 220, 60, 0.95)"


LINE_COLOUR = "#ff1fd2"  # the calibration line the user draws


def axis_title(metric, unit):
    return f"{METRIC_LABELS.get(metric, metric.replace('_', ' ').capitalize())} ({display_unit(unit)})"


def histogram_figure(table, metric="equivalent_diameter", bin_width=None, nm_per_pixel=None, summary=None,
                     key=None, caption=None):
    """Plotly histogram of one metric of the kept particles, with mean and median lines."""
    summary = summary or summary_of(table, metric, nm_per_pixel)
    unit = table_unit(table, nm_per_pixel) if parse_nm_per_pixel(nm_per_pixel) else "px"
    col = metric_column(table, metric, unit)
    values = table[col].to_numpy(dtype=float) if col in table else np.array([])
    fig = go.Figure()
    xbins = None
    try:
        bw = float(bin_width)
        if math.isfinite(bw) and bw > 0 and values.size:
            lo = math.floor(values.min() / bw) * bw
            if (values.max() - lo) / bw <= 2000:  # a tiny bin width must not hang the browser
                xbins = {"start": lo, "end": values.max() + bw, "size": bw}
    except (TypeError, ValueError):
        pass
    fig.add_trace(go.Histogram(x=values, xbins=xbins, name="particles", marker_color="#4c78a8",
                               marker_line={"color": "white", "width": 1},
                               hovertemplate="%{x}<br>%{y} particles<extra></extra>"))
    mean, median = summary.get("mean"), summary.get("median")
    mean_right = not (median is not None and mean is not None and median > mean)  # labels point apart
    for stat, colour, dash in (("mean", "#d62728", "solid"), ("median", "#2ca02c", "dash")):
        v = summary.get(stat)
        if summary.get("count") and v is not None and math.isfinite(v):
            right = mean_right if stat == "mean" else not mean_right
            fig.add_vline(x=v, line={"color": colour, "width": 2, "dash": dash},
                          annotation={"text": f"{stat} {format_number(v)}", "font": {"color": colour}},
                          annotation_position="top right" if right else "top left")
    fig.update_layout(template="plotly_white", margin={"l": 50, "r": 15, "t": 30, "b": 45},
                      xaxis_title=axis_title(metric, summary.get("unit", unit)) + (
                          f"<br><sub>{caption}</sub>" if caption else ""), yaxis_title="Count",
                      bargap=0.02, showlegend=False, uirevision=f"{metric}:{unit}",
                      meta={"count": summary.get("count", 0), "key": key or ""})
    if not values.size:
        fig.add_annotation(text="no particles", showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def data_url(data, mime):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def base_figure(display, banner_box=None, opacity=0.9, scale_box=None):
    """The image view before any analysis: the micrograph, a banner box, empty layers.

    The axes are in original-image pixels with pixel centres at integers: a
    subsampled picture (``stride`` > 1) is stretched over the same range, so
    shapes the user draws (the calibration line) come back in image pixels.
    """
    w, h, stride = display["width"], display["height"], display.get("stride", 1)
    fig = go.Figure()
    fig.add_trace(go.Image(source=display["source"], x0=(stride - 1) / 2, dx=stride, y0=(stride - 1) / 2,
                           dy=stride, hoverinfo="skip", name="micrograph"))
    fig.add_trace(go.Image(source=EMPTY_PNG, x0=0, dx=max(w, 1), y0=0, dy=max(h, 1),
                           opacity=0.9 if opacity is None else float(opacity),
                           hoverinfo="skip", name="particles"))
    fig.add_trace(go.Heatmap(z=np.zeros((1, 1), np.uint16), x0=w / 2, dx=w, y0=h / 2, dy=h, showscale=False,
                             colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]], hoverinfo="none",
                             name="labels", zmin=0, zmax=1))
    shapes = []
    if banner_box:
        shapes.append({"type": "rect", "x0": banner_box["x0"] - 0.5, "x1": banner_box["x1"] - 0.5,
                       "y0": banner_box["y0"] - 0.5, "y1": banner_box["y1"] - 0.5,
                       "line": {"color": BANNER_COLOUR, "width": 2, "dash": "dot"}, "name": "banner"})
    if scale_box and len(scale_box) == 4:  # (y0, y1, x0, x1), half-open
        y0, y1, x0, x1 = (float(v) for v in scale_box)
        shapes.append({"type": "rect", "x0": x0 - 1.5, "x1": x1 + 0.5, "y0": y0 - 1.5, "y1": y1 + 0.5,
                       "line": {"color": SCALE_COLOUR, "width": 2}, "name": "scale bar"})
    fig.update_layout(margin={"l": 0, "r": 0, "t": 0, "b": 0}, dragmode="pan", shapes=shapes,
                      newshape={"line": {"color": LINE_COLOUR, "width": 3}, "opacity": 1},
                      hovermode="closest", uirevision=display["source"][-64:], template="none",
                      paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
                      meta={"width": w, "height": h})
    fig.update_xaxes(visible=False, range=[-0.5, w - 0.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[h - 0.5, -0.5], scaleanchor="x", constrain="domain")
    return fig


def graph_style(width=None, height=None):
    """CSS of the image view: as tall as the image's aspect needs, within the window."""
    style = {"width": "100%", "minHeight": "300px", "maxHeight": "calc(100vh - 190px)"}
    if width and height:
        style["aspectRatio"] = f"{int(width)} / {int(height)}"
    else:
        style["height"] = "clamp(340px, calc(100vh - 200px), 880px)"
    return style


def preview_display(preview, width, height):
    """The image view's picture from the service's ``preview`` (a JPEG of every ``stride``-th pixel)."""
    return {"source": data_url(base64.b64decode(preview["jpeg"]), "image/jpeg"), "width": int(width),
            "height": int(height), "stride": int(preview.get("stride") or 1)}


def grid_array(grid):
    """The hover grid's labels (``grid`` from ``particle_layer``) as a 2-D integer array."""
    z = np.frombuffer(base64.b64decode(grid["z"]), dtype=np.dtype(grid["dtype"]).newbyteorder("<"))
    return z.reshape(grid["shape"]).astype(grid["dtype"])


def layer_patch(patch, layer):
    """Write a ``particle_layer`` answer into a Patch of the image view (layer, and grid when sent)."""
    stride = int(layer.get("stride") or 1)
    patch["data"][1]["source"] = "data:image/png;base64," + layer["layer_png"]
    # pixel centres as the preview's: a subsampled layer lies over the same image pixels
    patch["data"][1]["x0"] = patch["data"][1]["y0"] = (stride - 1) / 2
    patch["data"][1]["dx"] = patch["data"][1]["dy"] = stride
    grid = layer.get("grid")
    if grid is not None:
        z = grid_array(grid)
        patch["data"][2]["z"] = z
        for k in ("x0", "dx", "y0", "dy"):
            patch["data"][2][k] = grid[k]
        patch["data"][2]["zmax"] = max(1, int(z.max(initial=0)))
    return patch


EMPTY_PNG = data_url(png_bytes(np.zeros((1, 1, 4), np.uint8)), "image/png")
