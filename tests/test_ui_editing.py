"""The editing tools' helpers (saemi.ui.editing), without a browser."""

from dash import no_update

from saemi.ui import editing


def test_edits_text_counts_and_names_what_no_longer_applies():
    assert editing.edits_text({}) == "" and editing.edits_text({"count": 0}) == ""
    assert editing.edits_text({"count": 1, "dropped": []}) == "1 edit"
    text = editing.edits_text({"count": 3, "dropped": [{"index": 1, "op": "merge", "reason": "one particle"}]})
    assert text == "3 edits; 1 does not apply with these settings (edit 2, merge: one particle)"


def test_exclusions_of_changed_particles_are_dropped():
    removed = {"key": "k", "labels": [3, 5, 9]}
    assert editing.without_changed(removed, "k", [5, 11]) == {"key": "k", "labels": [3, 9]}
    assert editing.without_changed(removed, "k", [4]) is no_update  # nothing excluded changed
    assert editing.without_changed(removed, "other", [3]) is no_update  # exclusions of another labelling


def test_merge_selection_toggles_and_belongs_to_its_labelling():
    sel = editing.toggle_selected(None, "k", 4)
    sel = editing.toggle_selected(sel, "k", 7)
    assert sel == {"key": "k", "labels": [4, 7]}
    assert editing.toggle_selected(sel, "k", 4) == {"key": "k", "labels": [7]}
    assert editing.selected_labels(sel, "new key") == []


def test_a_drawn_shape_of_the_wrong_kind_is_no_edit():
    line = {"type": "line", "x0": 1, "y0": 2, "x1": 30, "y1": 2}
    assert editing.drawn_shape({"shapes": [line]}, "add") is None
    assert editing.drawn_shape({"shapes": [{"type": "path", "path": "M1,1L5,5Z"}]}, "split") is None
    assert editing.drawn_shape({"shapes": [{"type": "line", "x0": "a"}]}, "split") is None
    assert editing.drawn_shape({"shapes": []}, "add") is None
