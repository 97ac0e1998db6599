"""The particles the page lists and counts (saemi.ui.particles, saemi.ui.numbers): exclusions, kept table, summaries, CSV."""

import io
import json
import numpy as np
import pandas as pd
import pytest
from saemi.measure import particle_table, summarize
from saemi.ui import numbers, particles
from uihelpers import *  # noqa: F401,F403  (fixtures and fakes shared by the page tests)


def test_toggle_removed_adds_and_restores():
    r = particles.toggle_removed(None, "k1", 3)
    assert r == {"key": "k1", "labels": [3]}
    r = particles.toggle_removed(r, "k1", 1)
    assert r["labels"] == [1, 3]
    r = particles.toggle_removed(r, "k1", 3)
    assert r["labels"] == [1]
    assert particles.toggle_removed(r, "k1", 0) == r  # background
    assert particles.toggle_removed(r, "k1", "x") == r


def test_new_labelling_clears_removed():
    r = {"key": "k1", "labels": [2]}
    assert particles.reconcile_removed(r, "k1") is r
    assert particles.reconcile_removed(r, "k2") == {"key": "k2", "labels": []}
    assert particles.toggle_removed(r, "k2", 5) == {"key": "k2", "labels": [5]}
    assert particles.removed_labels(r, "k2") == []
    assert particles.removed_labels(r, "k1") == [2]


@pytest.mark.parametrize("click,label", [(None, 0), ({"points": []}, 0), ({"points": [{"x": 1, "y": 2}]}, 0),
                                         ({"points": [{"z": 7, "x": 1}]}, 7), ({"points": [{"z": 0}]}, 0),
                                         ({"points": [{"z": 4.0}]}, 4)])
def test_clicked_label(click, label):
    assert particles.clicked_label(click) == label


def test_kept_table_drops_removed_and_matches_the_core_summary(analysis):
    full = particles.kept_table(analysis)
    assert list(full["label"]) == [1, 2, 3, 4]
    s = particles.summary_of(full)
    ref = summarize(particle_table(disc_labels()))
    assert s["count"] == ref["count"] == 4
    assert s["mean"] == pytest.approx(ref["mean"]) and s["d90"] == pytest.approx(ref["d90"])
    removed = {"key": analysis["key"], "labels": [2]}
    kept = particles.kept_table(analysis, removed)
    assert list(kept["label"]) == [1, 3, 4]
    assert particles.summary_of(kept)["count"] == 3
    # exclusions made under other settings do not apply
    assert len(particles.kept_table(analysis, {"key": "stale", "labels": [1, 2]})) == 4


def test_kept_table_in_nm(analysis):
    t = particles.kept_table(analysis, nm_per_pixel=2.0)
    assert np.allclose(t["equivalent_diameter_nm"], 2 * t["equivalent_diameter_px"])
    assert np.allclose(t["area_nm2"], 4 * t["area_px"])
    s = particles.summary_of(t, "area", 2.0)
    assert s["unit"] == "nm^2" and s["mean"] == pytest.approx(4 * particles.summary_of(t, "area")["mean"])
    assert particles.summary_of(t, "feret_max", None)["unit"] == "px"


def test_kept_table_empty():
    t = particles.kept_table(None)
    assert len(t) == 0 and "label" in t
    s = particles.summary_of(t)
    assert s["count"] == 0
    assert [r[1] for r in particles.summary_rows(s)] == ["0"] + ["-"] * 6


def test_summary_rows_format(analysis):
    rows = dict(particles.summary_rows(particles.summary_of(particles.kept_table(analysis))))
    assert rows["Particles"] == "4"
    assert rows["Mean"].endswith(" px") and rows["D90"].endswith(" px")


@pytest.mark.parametrize("v,text", [(None, "-"), (float("nan"), "-"), (3, "3"), (0.0, "0"), (1234.5678, "1,235"),
                                    (12.3456, "12.35"), (0.012345, "0.012")])
def test_format_number(v, text):
    assert numbers.format_number(v) == text


def test_particles_csv_has_one_row_per_kept_particle(analysis):
    removed = {"key": analysis["key"], "labels": [1]}
    table = particles.kept_table(analysis, removed, 1.5)
    text = particles.particles_csv(table)
    back = pd.read_csv(io.StringIO(text))
    assert len(back) == 3 and list(back["label"]) == [2, 3, 4]
    assert "equivalent_diameter_nm" in back and "touches_edge" in back


def test_summary_csv_lists_every_metric_and_settings(analysis):
    removed = {"key": analysis["key"], "labels": [4]}
    table = particles.kept_table(analysis, removed)
    back = pd.read_csv(io.StringIO(particles.summary_csv(table, analysis)))
    assert set(back["metric"]) >= {"area", "equivalent_diameter", "feret_max"}
    assert (back["count"] == 3).all()
    assert back["filename"].iloc[0] == "sample image.tif"
    assert str(back["removed_labels"].iloc[0]) == "4"
    assert bool(back["watershed"].iloc[0]) is True
    assert {"merge_threshold", "min_relative_size"} <= set(back.columns)


def test_download_names_are_safe():
    assert particles.download_name("my sample.tif", "particles") == "my_sample_particles.csv"
    assert particles.download_name("../../etc/passwd", "summary") == "passwd_summary.csv"
    assert particles.download_name(None, "summary") == "image_summary.csv"


@pytest.mark.parametrize("v,r", [(17780123.456, 17780123), (4758.018, 4758), (55.946, 55.95), (0.70512, 0.705),
                                 (0.0, 0.0), (float("nan"), None), (-12.3456, -12.35)])
def test_round_for_reading(v, r):
    assert numbers.round_for_reading(v) == r


def test_grid_columns_and_rows(analysis):
    defs = particles.grid_columns(None)
    cols = [c["field"] for c in defs]
    # "Touches edge" beside the label, both pinned: reachable however narrow the screen
    assert cols[:4] == ["label", "touches_edge", "area_px", "equivalent_diameter_px"]
    assert [c["field"] for c in defs if c.get("pinned") == "left"] == ["label", "touches_edge"]
    assert "area_nm2" in [c["field"] for c in particles.grid_columns(0.5)]
    rows = particles.grid_rows(particles.kept_table(analysis))
    assert len(rows) == 4 and rows[0]["touches_edge"] in ("yes", "no")
    assert json.dumps(rows)  # JSON-safe
    assert rows[3]["touches_edge"] == "yes"  # the disc at the top edge


def test_tooltip_text(analysis):
    text = particles.tooltip_text(2, analysis["particles"], 2.0, removed=[2])
    assert text.startswith("Particle 2: eq. diameter") and " nm" in text and "excluded" in text
    assert particles.tooltip_text(99, analysis["particles"]) == ""
