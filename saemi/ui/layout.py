"""The page: header, the four panels, the stores, and the footer with credits."""

from dash import dcc, html

from . import controls, histogram, image_view, sample, table, upload

DEMO_CREDIT = [
    "Demo image: EMPS dataset (Yildirim & Cole, 2021, MIT licence), from ",
    html.A("doi:10.1016/j.jiec.2019.05.007", href="https://doi.org/10.1016/j.jiec.2019.05.007",
           target="_blank", rel="noopener"),
    " (fig. 1).",
]


def page(defaults, backend_description="", max_upload_mb=50.0):
    return html.Div(className="app", children=[
        html.Header(className="app-header", children=[
            html.H1(["SAEMI ", html.Span("particle size analysis of electron micrographs", className="tagline")]),
        ]),
        html.Main(className="app-main", children=[
            html.Div(className="sidebar", children=[upload.layout(max_upload_mb), controls.layout(defaults)]),
            image_view.layout(),
            histogram.layout(),
            sample.layout(),
            table.layout(),
        ]),
        html.Footer(className="app-footer", children=[
            html.P(DEMO_CREDIT),
            html.P(f"Segmentation: ResNet18 U-Net with watershed splitting; {backend_description}.",
                   className="hint"),
        ]),
        dcc.Store(id="image-store"),
        dcc.Store(id="analysis-store"),
        # what the image view sends to have the particle layer drawn (the labels stay on the server)
        dcc.Store(id="analysis-ref-store"),
        dcc.Store(id="removed-store"),
        dcc.Store(id="calib-line-store"),
        dcc.Store(id="nm-store"),          # the calibration in force, nm per pixel (the field is in its unit)
        dcc.Store(id="confirm-store"),     # the image whose scale bar read the user confirmed
        dcc.Store(id="calib-note-store"),  # said beside every size while that read is unconfirmed
        dcc.Store(id="unit-store"),        # the length unit the sizes are shown in (px, nm, um)
        dcc.Store(id="shape-done-store"),  # output of the callback that ends a drawing (no data)
        # the upload itself, kept in the browser (never sent back with a slider move) so that an
        # image the server's cache has dropped is uploaded again without asking the user
        dcc.Store(id="upload-data-store"),
        dcc.Store(id="expired-store"),
        *sample.stores(),
    ])
