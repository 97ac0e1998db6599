"""The OpenAPI 3.1 description of ``/api/v1`` (served at ``/api/v1/openapi.json``).

Written as a Python dict so it lives next to the code it describes; the tests
validate it with ``openapi-spec-validator`` and check real responses against
its schemas with ``jsonschema`` (OpenAPI 3.1 schemas are JSON Schema 2020-12).
"""

import copy

from ..edits import MAX_EDITS, ORIGINS
from ..jobs import STATUSES as JOB_STATUSES
from ..settings import openapi_properties

_NUM_OR_NULL = {"type": ["number", "null"]}


def _err(description):
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


#: Every setting's schema, generated from saemi.settings (the one place each is declared).
_SETTINGS_PROPS = openapi_properties()
#: The settings /segment takes: those that change what the network sees.
_SEGMENT_PROPS = openapi_properties(stage=("segment",))

_ERRORS = {
    "400": _err("Malformed request: bad JSON, missing image, invalid base64, empty file (code bad_request "
                "or empty)."),
    "413": _err("Upload over SAEMI_MAX_UPLOAD_MB or image over SAEMI_MAX_PIXELS (code too_large)."),
    "415": _err("Not a decodable image, or an unsupported content type (code not_an_image or "
                "unsupported_media_type)."),
    "422": _err("Bad values: image under 32x32 (too_small), uniform image (blank_image), invalid settings "
                "(bad_parameter)."),
    "503": _err("The model is not loaded (code no_model)."),
}

_REUPLOAD = ("/segment only: upload an image again under the image_id it had before the cache dropped it "
             "(an id still known is left as it is).")

_IMAGE_ID = {"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}}
_NOT_FOUND = _err("Unknown or expired image_id (code not_found): upload the image again.")
_EDIT_RESULT = {"description": "The edits now in force.", "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/EditResult"}}}}
_SETTINGS_ONLY = {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": False,
    "properties": {"settings": {"$ref": "#/components/schemas/Settings"}}}}}}
_POINTS = {"type": "array", "minItems": 1, "items": {"type": "array", "prefixItems": [{"type": "number"}] * 2,
                                                       "minItems": 2, "maxItems": 2},
           "description": "[x, y] image pixels: x the column, y the row, pixel centres at integers."}
_QUERY_SETTINGS = {"name": "settings", "in": "query", "required": False, "style": "form", "explode": True,
                   "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                   "description": "Any setting as name=value (e.g. min_distance=7, removed_labels=3,5); "
                                  "default: the settings of the image's last analysis."}

_PREVIEW = {"type": "boolean", "default": False,
            "description": "/segment only: add `preview`, the image as a JPEG a browser can show."}
_PROGRESS = {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,100}$",
             "description": "A token the client makes up (e.g. one per browser tab): the stages of this "
                            "request's work are kept under it for GET /progress/{token}, from any worker."}

_IMAGE_BODY = {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "contentMediaType": "application/octet-stream",
                                "description": "PNG, JPEG, TIFF (8/16 bit), BMP; grey, RGB or RGBA."},
                       "filename": {"type": "string", "description": "Label for the CSV name; never a path."},
                       "image_id": {"type": "string", "description": _REUPLOAD},
                       "preview": _PREVIEW, "progress": _PROGRESS, **_SEGMENT_PROPS}}},
    "application/json": {"schema": {"$ref": "#/components/schemas/SegmentRequest"}},
    "image/*": {"schema": {"type": "string", "contentMediaType": "image/*",
                           "description": "Raw image bytes; 'filename' may be given in the query string."}},
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "SAEMI prediction API",
        # the API contract's version, not the package's: unauthenticated responses name no versions
        "version": "1",
        "summary": "Particle segmentation and size analysis of electron-microscopy images.",
        "description": (
            "Upload a micrograph once (`/segment` or `/analyze`); the network's output is cached, shared by "
            "every worker (and by replicas with Redis), under the returned random `image_id`, and `/analyze` "
            "with that `image_id` re-splits and re-measures without running the network again. Every error "
            "has the body `{\"error\": {\"code\": ..., \"message\": ...}}`. The cache is bounded in bytes: "
            "once an image has been dropped, its `image_id` answers 404 `not_found`, and the client uploads "
            "the image again (to `/segment`, with the same `image_id` to keep it)."),
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "servers": [{"url": "/api/v1"}],
    "paths": {
        "/health": {"get": {
            "operationId": "health", "summary": "Liveness: the process answers (200 even while loading).",
            "responses": {"200": {"description": "Alive.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Health"}}}}}}},
        "/ready": {"get": {
            "operationId": "ready", "summary": "Readiness: 200 once the model is loaded, 503 before.",
            "responses": {"200": {"description": "Ready to analyse.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Ready"}}}},
                "503": _err("Model still loading (not_ready) or failed to load (no_model).")}}},
        "/model": {"get": {
            "operationId": "model", "summary": "The model card of the weights in use.",
            "responses": {"200": {"description": "Model card.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ModelCard"}}}}}}},
        "/openapi.json": {"get": {
            "operationId": "openapi", "summary": "This document.",
            "responses": {"200": {"description": "OpenAPI 3.1 document.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        "/segment": {"post": {
            "operationId": "segment",
            "summary": "Banner removal and the network, once; caches the output under an image_id.",
            "requestBody": {"required": True, "content": _IMAGE_BODY},
            "responses": {"200": {"description": "Segmented.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Segmentation"}}}}, **_ERRORS}}},
        "/analyze": {"post": {
            "operationId": "analyze",
            "summary": "Particles, table, summary and pictures; with image_id the network is not run again.",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/AnalyzeRequest"}},
                "multipart/form-data": {"schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                        "image_id": {"type": "string"}, "filename": {"type": "string"},
                        "settings": {"type": "string", "description": "A JSON object of settings."},
                        "overlay": {"type": "string", "enum": ["outline", "filled"]},
                        "overlay_alpha": {"type": "string"}, "include_images": {"type": "string"},
                        "progress": _PROGRESS},
                    "additionalProperties": {"type": "string",
                                             "description": "Any setting name, as text (e.g. min_size=30)."}}}}},
            "responses": {"200": {"description": "Analysed.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Analysis"}}}},
                "404": _err("Unknown or expired image_id (code not_found): upload the image again."),
                **_ERRORS}}},
        "/jobs": {"post": {
            "operationId": "submitJob",
            "summary": "Queue an analysis and answer at once (202) with a job whose stage can be followed.",
            "description": "The body is that of /analyze (include_images defaults to false here: the pictures "
                           "are one /analyze by image_id away once the job is done). Poll GET /jobs/{job_id} "
                           "(Location header) from any worker for the stage and, at the end, the result.",
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                    "image_id": {"type": "string"}, "filename": {"type": "string"},
                    "settings": {"type": "string", "description": "A JSON object of settings."},
                    "include_images": {"type": "string"}},
                    "additionalProperties": {"type": "string"}}}}},
            "responses": {"202": {"description": "Queued.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Job"}}}},
                "404": _err("Unknown or expired image_id (code not_found): upload the image again."),
                **_ERRORS,
                "503": _err("The model is not loaded (no_model), or this worker already holds as many jobs as "
                            "it takes (busy): retry later.")}}},
        "/jobs/{job_id}": {"get": {
            "operationId": "jobStatus",
            "summary": "A job's status, the stage now running, the stages so far, and its result once done.",
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "The job.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Job"}}}},
                "404": _err("Unknown or expired job id (code not_found).")}}},
        "/progress/{token}": {"get": {
            "operationId": "progress",
            "summary": "The stage of the /segment or /analyze request sent with this progress token.",
            "description": "For a client that shows progress while its request runs (the page's progress "
                           "line): poll this from any worker. done is true once the request has ended.",
            "parameters": [{"name": "token", "in": "path", "required": True, "schema": _PROGRESS}],
            "responses": {"200": {"description": "The latest stage.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Progress"}}}},
                "404": _err("Nothing has reported under this token (yet), or no record could have it "
                            "(code not_found).")}}},
        "/layer": {"post": {
            "operationId": "particleLayer",
            "summary": "What a page draws over the image: the particle layer and the hover grid of an analysis.",
            "description": "Drawn from the labels the server keeps for the image and these splitting settings "
                           "(split again only if the cache dropped them); removed_labels are drawn darkened. "
                           "A client never needs the label image to show or edit a result.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["image_id"], "additionalProperties": False,
                "properties": {"image_id": {"type": "string"},
                               "overlay": {"type": "string", "enum": ["outline", "filled"], "default": "outline"},
                               "grid": {"type": "boolean", "default": True,
                                        "description": "Include the hover grid (it changes only with the "
                                                       "splitting settings)."},
                               "settings": {"$ref": "#/components/schemas/Settings"}, **_SETTINGS_PROPS}}}}},
            "responses": {"200": {"description": "The layer.", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Layer"}}}},
                "404": _err("Unknown or expired image_id (code not_found): upload the image again."),
                **_ERRORS}}},
        "/analyses/{image_id}/particles.csv": {"get": {
            "operationId": "particlesCsv",
            "summary": "Per-particle table of the image's last analysis as CSV (default settings if none).",
            "parameters": [{"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {"description": "CSV; Content-Disposition names the file <stem>_particles.csv.",
                        "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                        "content": {"text/csv": {"schema": {"type": "string"}}}},
                "404": _err("Unknown or expired image_id (code not_found).")}}},
        "/analyses/{image_id}/preview": {"get": {
            "operationId": "preview",
            "summary": "The image of an upload as a JPEG a browser shows (no network run), with what segment says.",
            "parameters": [{"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": {"description": "segment's answer plus preview: {jpeg (base64), stride}.",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "404": _err("Unknown or expired image_id (code not_found).")}}},
        "/sample": {"post": {
            "operationId": "sample",
            "summary": "The combined size distribution of several analysed images (a sample), or its CSVs.",
            "description": "Each image keeps its own splitting settings, exclusions (removed_labels), edits and "
                           "calibration. Sizes are pooled in nm (or um) when every image has a calibration, else "
                           "in px (note says why). Filters are inclusive ranges, either end null: size (of the "
                           "metric, in the sample's unit), circularity, aspect_ratio. format particles.csv: one "
                           "row per particle that passes, an image column first; summary.csv: one row per image "
                           "then the pooled sample row (with the log-normal and normal fits).",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["images"], "additionalProperties": False,
                "properties": {
                    "images": {"type": "array", "minItems": 1, "maxItems": 200, "items": {
                        "type": "object", "required": ["image_id"],
                        "properties": {"image_id": {"type": "string"},
                                       "settings": {"$ref": "#/components/schemas/Settings"},
                                       "nm_per_pixel": {"type": ["number", "null"]}}}},
                    "metric": {"type": "string", "enum": ["area", "equivalent_diameter", "feret_max", "feret_min",
                                                          "perimeter"], "default": "equivalent_diameter"},
                    "weighting": {"type": "string", "enum": ["number", "volume"], "default": "number"},
                    "unit": {"type": "string", "enum": ["auto", "nm", "um"], "default": "auto"},
                    "filters": {"type": "object", "additionalProperties": False, "properties": {
                        k: {"type": "array", "minItems": 2, "maxItems": 2,
                            "items": {"type": ["number", "null"]}} for k in ("size", "circularity", "aspect_ratio")}},
                    "format": {"type": "string", "enum": ["json", "particles.csv", "summary.csv"], "default": "json"},
                    "name": {"type": "string", "description": "The sample's name, for the CSV file names."}}}}}},
            "responses": {"200": {"description": "summary, per_image, values, weights, cumulative, lognormal "
                                                 "(median, gsd, ks, p_value, x, pdf), normal, filtered "
                                                 "(image_id -> labels left out); or CSV.",
                                  "content": {"application/json": {"schema": {"type": "object"}},
                                              "text/csv": {"schema": {"type": "string"}}}},
                          "404": _err("Unknown or expired image_id (code not_found): upload the image again."),
                          **_ERRORS}}},
        "/analyses/{image_id}/edits": {
            "get": {
                "operationId": "listEdits", "summary": "The manual edits of an image, oldest first, and the redo stack.",
                "parameters": [_IMAGE_ID],
                "responses": {"200": {"description": "Edits.", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["image_id", "done", "undone"],
                    "properties": {"image_id": {"type": "string"},
                                   "done": {"type": "array", "items": {"$ref": "#/components/schemas/Edit"}},
                                   "undone": {"type": "array", "items": {"$ref": "#/components/schemas/Edit"},
                                              "description": "What redo applies again, the next one last."}}}}}},
                    "404": _NOT_FOUND}},
            "post": {
                "operationId": "addEdits",
                "summary": "Correct the particles: add, erase, split or merge; every later analysis applies the edits.",
                "description": "Edits are kept on the server beside the image's cached segmentation, as geometry "
                               "in image pixels, and replayed on the labels of any splitting settings: a drawn "
                               "particle always survives a slider move, a merge survives while its points fall on "
                               "two or more particles, and so on. Analyses report the edits that no longer apply "
                               "(`edits.dropped`). `labels` (for erase and merge) name particles in the labelling "
                               "of the request's settings (default: the last analysis's) before this request. An "
                               "edit that changes nothing is refused (422) and then none of the request's edits "
                               f"is kept. At most {MAX_EDITS} edits per image.",
                "parameters": [_IMAGE_ID],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [{"$ref": "#/components/schemas/Edit"},
                              {"type": "object", "required": ["edits"], "additionalProperties": False,
                               "properties": {"edits": {"type": "array", "minItems": 1,
                                                        "items": {"$ref": "#/components/schemas/Edit"}},
                                              "settings": {"$ref": "#/components/schemas/Settings"},
                                              **_SETTINGS_PROPS}}]}}}},
                "responses": {"201": _EDIT_RESULT, "404": _NOT_FOUND, **_ERRORS}},
            "delete": {
                "operationId": "clearEdits", "summary": "Drop every edit of an image (not undoable).",
                "parameters": [_IMAGE_ID], "requestBody": _SETTINGS_ONLY,
                "responses": {"200": _EDIT_RESULT, "404": _NOT_FOUND, **_ERRORS}}},
        "/analyses/{image_id}/edits/undo": {"post": {
            "operationId": "undoEdit", "summary": "Take back the last edit (redo applies it again).",
            "parameters": [_IMAGE_ID], "requestBody": _SETTINGS_ONLY,
            "responses": {"200": _EDIT_RESULT, "404": _NOT_FOUND, **_ERRORS,
                          "422": _err("No edit to undo, or bad settings (code bad_parameter).")}}},
        "/analyses/{image_id}/edits/redo": {"post": {
            "operationId": "redoEdit", "summary": "Apply again the last edit undone.",
            "parameters": [_IMAGE_ID], "requestBody": _SETTINGS_ONLY,
            "responses": {"200": _EDIT_RESULT, "404": _NOT_FOUND, **_ERRORS,
                          "422": _err("No edit to redo, or bad settings (code bad_parameter).")}}},
        "/analyses/{image_id}/labels.png": {"get": {
            "operationId": "labelsPng",
            "summary": "The corrected label image: 16-bit PNG, 0 background (the CLI's <name>_labels.png).",
            "description": "Excluded particles (removed_labels) are zeroed unless every_particle=true.",
            "parameters": [_IMAGE_ID, {"name": "every_particle", "in": "query", "required": False,
                                       "schema": {"type": "boolean", "default": False}}, _QUERY_SETTINGS],
            "responses": {"200": {"description": "PNG; Content-Disposition names <stem>_labels.png.",
                                  "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                                  "content": {"image/png": {"schema": {"type": "string",
                                                                       "contentMediaType": "image/png"}}}},
                          "404": _NOT_FOUND, **_ERRORS}}},
        "/analyses/{image_id}/training-pair.zip": {"get": {
            "operationId": "trainingPair",
            "summary": "The image and its corrected mask as images/<name>.png + segmaps/<name>.png in a zip.",
            "description": "Unzip several into one folder for `saemi train --extra DIR`. The mask holds every "
                           "particle, the excluded ones too.",
            "parameters": [_IMAGE_ID, _QUERY_SETTINGS],
            "responses": {"200": {"description": "Zip; Content-Disposition names <stem>_training_pair.zip.",
                                  "headers": {"Content-Disposition": {"schema": {"type": "string"}}},
                                  "content": {"application/zip": {"schema": {"type": "string"}}}},
                          "404": _NOT_FOUND, **_ERRORS}}},
    },
    "components": {"schemas": {
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {
                "type": "object", "required": ["code", "message"], "additionalProperties": False,
                "properties": {
                    "code": {"type": "string", "description": "Machine-readable tag, e.g. not_an_image."},
                    "message": {"type": "string", "description": "What is wrong, for a user."}}}}},
        "Health": {
            "type": "object", "additionalProperties": False,
            "required": ["status", "model_loaded", "device", "cached_images", "load_error"],
            "properties": {"status": {"const": "ok"},
                           "model_loaded": {"type": "boolean"},
                           "device": {"type": ["string", "null"], "description": "cpu or cuda..., null until loaded"},
                           "engine": {"type": ["string", "null"],
                                      "description": "What runs the network: 'openvino bf16', 'torch fp32', ...; "
                                                     "null until loaded."},
                           "cached_images": {"type": "integer", "minimum": 0},
                           "load_error": {"type": ["string", "null"]}}},
        "Ready": {"type": "object", "required": ["ready", "device"],
                  "properties": {"ready": {"const": True}, "device": {"type": "string"}}},
        "ModelCard": {
            "type": "object", "required": ["architecture", "classes", "postprocess"],
            "properties": {"architecture": {"type": "string"},
                           "classes": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                           "input_scale": {"type": "number"}, "tile_size": {"type": "integer"},
                           "tile_overlap": {"type": "integer"}, "postprocess": {"type": "object"}},
            "additionalProperties": True},
        "BannerBox": {
            "type": ["object", "null"], "required": ["x0", "y0", "x1", "y1"],
            "description": "The detected data bar, pixels (x1, y1 exclusive), or null.",
            "properties": {k: {"type": "integer", "minimum": 0} for k in ("x0", "y0", "x1", "y1")}},
        "Scale": {
            "type": ["object", "null"], "required": ["bar_length_px", "nm_per_pixel"],
            "description": "The scale bar read in the image (before banner removal), or null.",
            "properties": {
                "bar_length_px": {"type": "number"}, "value": _NUM_OR_NULL, "unit": {"type": ["string", "null"]},
                "nm_per_pixel": _NUM_OR_NULL,
                "bar_box": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
                            "description": "y0, y1, x0, x1 (half-open), pixels."},
                "label_box": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 4,
                              "maxItems": 4},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1}, "text": {"type": "string"}}},
        "Calibration": {
            "type": "object", "required": ["nm_per_pixel", "source", "details", "text", "warnings"],
            "description": "What the sizes in nm rest on: the user's value, else the file's own pixel size, else "
                           "the scale bar read in the image. Disagreements and unusable metadata are warnings.",
            "properties": {
                "nm_per_pixel": _NUM_OR_NULL,
                "source": {"type": ["string", "null"], "enum": ["file", "scale_bar", "user", None]},
                "details": {"type": "string", "description": "e.g. 'Zeiss CZ_SEM, 50.00 kX'."},
                "text": {"type": "string", "description": "e.g. '7.344 nm/px from the file (Zeiss CZ_SEM, 50.00 kX)'."},
                "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "reader": {"type": "string", "description": "The metadata reader: zeiss_cz_sem, fei, tescan, "
                                                            "olympus_sis, ome, imagej, digitalmicrograph, emd, "
                                                            "mrc, hitachi_txt, jeol_txt, or ''."},
                "instrument": {"type": ["string", "null"]}, "detector": {"type": ["string", "null"]},
                "magnification": _NUM_OR_NULL, "high_voltage_kv": _NUM_OR_NULL,
                "file_nm_per_pixel": _NUM_OR_NULL, "scale_bar_nm_per_pixel": _NUM_OR_NULL,
                "warnings": {"type": "array", "items": {"type": "string"}},
                "notes": {"type": "array", "items": {"type": "string"}}}},
        "SegmentRequest": {
            "type": "object", "required": ["image"], "additionalProperties": False,
            "properties": {"image": {"type": "string", "contentEncoding": "base64",
                                     "description": "Image file bytes, base64 (a data: URL prefix is accepted)."},
                           "filename": {"type": "string"},
                           "image_id": {"type": "string", "description": _REUPLOAD},
                           "preview": _PREVIEW, "progress": _PROGRESS, **_SEGMENT_PROPS}},
        "Layer": {
            "type": "object", "required": ["layer_png", "stride", "width", "height", "count"],
            "properties": {
                "layer_png": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                              "description": "RGBA PNG of every stride-th pixel of the image (the preview's "
                                             "subsampling): outlines or filled labels, excluded particles "
                                             "darkened."},
                "stride": {"type": "integer", "minimum": 1,
                           "description": "Pixel (i, j) of layer_png covers image pixel (i stride, j stride); 1 up "
                                          "to 2048 px a side."},
                "width": {"type": "integer"}, "height": {"type": "integer"},
                "count": {"type": "integer", "minimum": 0, "description": "Particles found (before exclusions)."},
                "grid": {"type": "object", "required": ["z", "dtype", "shape", "x0", "dx", "y0", "dy"],
                         "description": "Subsampled labels for hover look-ups: cell (i, j) is centred on pixel "
                                        "(y0 + i dy, x0 + j dx).",
                         "properties": {"z": {"type": "string", "contentEncoding": "base64",
                                              "description": "Little-endian integers, row-major."},
                                        "dtype": {"type": "string", "enum": ["uint16", "int32"]},
                                        "shape": {"type": "array", "items": {"type": "integer"}},
                                        "x0": {"type": "number"}, "dx": {"type": "number"},
                                        "y0": {"type": "number"}, "dy": {"type": "number"}}}}},
        "Settings": {"type": "object", "additionalProperties": False, "properties": _SETTINGS_PROPS,
                     "description": "Missing keys take the model card's tuned defaults."},
        "SettingsUsed": {"type": "object", "required": sorted(_SETTINGS_PROPS), "properties": _SETTINGS_PROPS},
        "AnalyzeRequest": {
            "type": "object",
            "description": "Exactly one of image and image_id. Settings go in `settings` or at the top level.",
            "properties": {"image": {"type": "string", "contentEncoding": "base64"},
                           "image_id": {"type": "string"}, "filename": {"type": "string"},
                           "settings": {"$ref": "#/components/schemas/Settings"},
                           "overlay": {"type": "string", "enum": ["outline", "filled"], "default": "outline"},
                           "overlay_alpha": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.7},
                           "include_images": {"type": "boolean", "default": True},
                           "progress": _PROGRESS, **_SETTINGS_PROPS},
            "additionalProperties": False,
            "oneOf": [{"required": ["image"]}, {"required": ["image_id"]}]},
        "Segmentation": {
            "type": "object",
            "required": ["image_id", "filename", "width", "height", "banner_box", "scale", "calibration", "timings",
                         "cached"],
            "properties": {
                "image_id": {"type": "string", "description": "Handle for re-analysis and the CSV."},
                "filename": {"type": "string"},
                "width": {"type": "integer", "minimum": 1}, "height": {"type": "integer", "minimum": 1},
                "banner_box": {"$ref": "#/components/schemas/BannerBox"},
                "scale": {"$ref": "#/components/schemas/Scale"},
                "calibration": {"$ref": "#/components/schemas/Calibration"},
                "timings": {"type": "object", "additionalProperties": {"type": "number"},
                            "description": "Seconds per stage this request ran."},
                "cached": {"type": "boolean", "description": "The network output was already cached."},
                "diameter": {"type": ["number", "null"], "exclusiveMinimum": 0,
                             "description": "Typical particle diameter (px) the image was normalised to (null: no "
                                            "particle to estimate it from); see saemi.size."},
                "diameter_source": {"type": ["string", "null"], "enum": ["estimated", "user", None],
                                    "description": "estimated per image, or the user's diameter setting."},
                "preview": {"type": "object", "required": ["jpeg", "stride"],
                            "description": "With preview=true: the image as a JPEG, every stride-th pixel.",
                            "properties": {"jpeg": {"type": "string", "contentEncoding": "base64"},
                                           "stride": {"type": "integer", "minimum": 1}}}}},
        "Edit": {
            "type": "object", "required": ["op"],
            "description": "One correction, in image pixels (see saemi.edits).",
            "oneOf": [
                {"properties": {"op": {"const": "add"}, "polygon": {**_POINTS, "minItems": 3}},
                 "required": ["op", "polygon"], "additionalProperties": False,
                 "description": "A new particle: the pixels inside the closed outline; it takes over the pixels "
                                "of the particles it covers."},
                {"properties": {"op": {"const": "split"}, "line": {**_POINTS, "minItems": 2}},
                 "required": ["op", "line"], "additionalProperties": False,
                 "description": "Cut the particles the polyline crosses into the pieces on either side."},
                {"properties": {"op": {"enum": ["erase", "merge"]}, "points": _POINTS,
                                "labels": {"type": "array", "minItems": 1, "items": {"type": "integer"}}},
                 "required": ["op"], "additionalProperties": False,
                 "oneOf": [{"required": ["points"]}, {"required": ["labels"]}],
                 "description": "Erase the particles under the points (or with these labels), or merge them "
                                "(two or more) into one. Stored as points."}]},
        "EditsSummary": {
            "type": "object", "required": ["count", "applied", "dropped", "can_undo", "can_redo"],
            "properties": {
                "count": {"type": "integer", "minimum": 0, "description": "Edits of the image."},
                "applied": {"type": "integer", "minimum": 0, "description": "Those that applied to this labelling."},
                "dropped": {"type": "array", "description": "Edits that change nothing under these settings.",
                            "items": {"type": "object", "required": ["index", "op", "reason"],
                                      "properties": {"index": {"type": "integer"}, "op": {"type": "string"},
                                                     "reason": {"type": "string"}}}},
                "can_undo": {"type": "boolean"}, "can_redo": {"type": "boolean"}}},
        "EditResult": {
            "type": "object", "required": ["image_id", "edits", "changed_labels", "count"],
            "properties": {"image_id": {"type": "string"},
                           "edits": {"$ref": "#/components/schemas/EditsSummary"},
                           "changed_labels": {"type": "array", "items": {"type": "integer"},
                                              "description": "Particles made, removed or reshaped by this call."},
                           "count": {"type": "integer", "minimum": 0, "description": "Particles now."}}},
        "Summary": {
            "type": "object",
            "required": ["metric", "unit", "count", "mean", "median", "std", "d10", "d50", "d90"],
            "properties": {"metric": {"type": "string"}, "unit": {"type": "string"},
                           "count": {"type": "integer", "minimum": 0}, "mean": _NUM_OR_NULL,
                           "median": _NUM_OR_NULL, "std": _NUM_OR_NULL, "d10": _NUM_OR_NULL,
                           "d50": _NUM_OR_NULL, "d90": _NUM_OR_NULL}},
        "Particle": {
            "type": "object",
            "required": ["label", "area_px", "equivalent_diameter_px", "feret_max_px", "feret_min_px",
                         "perimeter_px", "circularity", "aspect_ratio", "centroid_x_px", "centroid_y_px",
                         "touches_edge", "origin"],
            "properties": {"label": {"type": "integer", "minimum": 1}, "area_px": {"type": "integer"},
                           "equivalent_diameter_px": {"type": "number"}, "feret_max_px": {"type": "number"},
                           "feret_min_px": {"type": "number"}, "perimeter_px": {"type": "number"},
                           "circularity": {"type": "number"}, "aspect_ratio": _NUM_OR_NULL,
                           "centroid_x_px": {"type": "number"}, "centroid_y_px": {"type": "number"},
                           "touches_edge": {"type": "boolean"},
                           "origin": {"enum": list(ORIGINS), "description": "What made the particle: the model, "
                                                                            "or a manual edit."},
                           "area_nm2": {"type": "number"}, "equivalent_diameter_nm": {"type": "number"},
                           "feret_max_nm": {"type": "number"}, "feret_min_nm": {"type": "number"},
                           "perimeter_nm": {"type": "number"}, "centroid_x_nm": {"type": "number"},
                           "centroid_y_nm": {"type": "number"}}},
        "Progress": {
            "type": "object", "required": ["stage", "elapsed_s", "done"],
            "properties": {"stage": {"type": "string", "description": "e.g. \"network tile 3 of 12\"; "
                                                                      "\"done\" once ended."},
                           "elapsed_s": {"type": "number", "minimum": 0},
                           "done": {"type": "boolean"}}},
        "Job": {
            "type": "object", "required": ["job_id", "status", "stage", "stages", "elapsed_s"],
            "properties": {
                "job_id": {"type": "string"},
                "status": {"enum": list(JOB_STATUSES), "description": "lost: the worker running it stopped "
                                                                      "before it ended."},
                "stage": {"type": "string", "description": "What runs now, or ran last (\"network tile 3 of "
                                                           "12\", \"splitting touching particles\")."},
                "stages": {"type": "array", "items": {"type": "object", "required": ["stage", "at_s"],
                                                      "properties": {"stage": {"type": "string"},
                                                                     "at_s": {"type": "number"}}}},
                "label": {"type": ["string", "null"]},
                "elapsed_s": {"type": "number", "minimum": 0},
                "status_url": {"type": "string"},
                "result": {"$ref": "#/components/schemas/Analysis"},
                "error": {"type": "object", "required": ["code", "message"],
                          "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
        "Analysis": {
            "allOf": [{"$ref": "#/components/schemas/Segmentation"}],
            "type": "object", "required": ["settings", "nm_per_pixel", "summary", "particles"],
            "properties": {
                "settings": {"$ref": "#/components/schemas/SettingsUsed"},
                "nm_per_pixel": {"type": ["number", "null"],
                                 "description": "Calibration used: the user's, else the file's, else the scale "
                                                "bar's, else null (its record: calibration)."},
                "summary": {"$ref": "#/components/schemas/Summary"},
                "particles": {"type": "array", "items": {"$ref": "#/components/schemas/Particle"}},
                "edits": {"$ref": "#/components/schemas/EditsSummary"},
                "labels_png": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                               "description": "16-bit PNG of the labels (0 background); absent if "
                                              "include_images is false."},
                "overlay_png": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png",
                                "description": "RGB PNG of the particles over the image."}}},
    }},
}


def _job_request(schemas):
    """/jobs takes /analyze's body without ``progress`` (a job reports its stages at /jobs/{job_id})."""
    job = copy.deepcopy(schemas["AnalyzeRequest"])
    del job["properties"]["progress"]
    return job


def openapi_document(base_url="/api/v1"):
    """The OpenAPI document, with ``servers`` pointing at ``base_url``."""
    doc = copy.deepcopy(DOCUMENT)
    doc["components"]["schemas"]["JobRequest"] = _job_request(doc["components"]["schemas"])
    doc["servers"] = [{"url": base_url or "/api/v1"}]
    return doc
