"""The settings schema (saemi.settings): every layer reads its settings from it, and only from it."""

import ast
from dataclasses import fields
from pathlib import Path

import pytest

from saemi import settings as schema
from saemi.errors import SaemiError
from saemi.settings import Settings, SplitSettings

REPO = Path(__file__).resolve().parents[1]
NAMES = [f.name for f in fields(Settings)]


def test_every_setting_declares_its_schema():
    for f in fields(Settings):
        assert f.metadata["stage"] in schema.STAGES and f.metadata["help"].endswith("."), f.name
        assert "range" in f.metadata or "choices" in f.metadata or isinstance(f.default, (bool, tuple)), f.name
    assert schema.names("split") == tuple(f.name for f in fields(SplitSettings))
    assert set(schema.names("segment")) == {"remove_banner", "scale_bar", "diameter"}
    assert schema.tuned_names() == tuple(schema.tuning_grid())


def test_openapi_properties_follow_the_schema():
    props = schema.openapi_properties()
    assert list(props) == NAMES
    assert props["min_distance"]["minimum"] == 1 and props["min_distance"]["maximum"] == 1000
    assert props["threshold"]["exclusiveMinimum"] == 0 and props["metric"]["enum"][0] == "area"
    assert props["nm_per_pixel"]["type"] == ["number", "null"] and props["exclude_edge"]["default"] is False
    assert list(schema.openapi_properties(stage=("segment",))) == ["remove_banner", "scale_bar", "diameter"]


def test_cli_flags_come_from_the_schema_and_bad_values_exit_2(capsys):
    from saemi.cli import build_parser, main

    args = build_parser().parse_args(["analyze", "x.png", "--out", "o", "--no-watershed", "--min-distance", "9",
                                      "--no-remove-banner", "--scale-bar", "none", "--exclude-edge"])
    given = schema.from_cli_arguments(args)
    assert given == {"watershed": False, "min_distance": 9, "remove_banner": False, "scale_bar": "none",
                     "exclude_edge": True}
    assert Settings.from_dict(given).min_distance == 9
    flags = build_parser()._subparsers._group_actions[0].choices["analyze"].format_help()
    for f in fields(Settings):
        assert (schema.cli_flag(f.name) in flags) == f.metadata["cli"], f.name
    for bad in (["--metric", "diameter"], ["--scale-bar", "guess"], ["--min-distance", "x"]):
        with pytest.raises(SystemExit) as exit_:
            main(["analyze", "x.png", "--out", "o", *bad])
        assert exit_.value.code == 2  # argparse: the documented code for a bad argument, before any work
    assert main(["analyze", "x.png", "--out", "o", "--min-distance", "0"]) == 2  # out of range
    assert "min_distance must be from 1 to 1000 px" in capsys.readouterr().err


def test_from_dict_coerces_and_names_the_bad_value():
    s = Settings.from_dict({"watershed": "off", "min_size": 30.0, "removed_labels": "3, 1 3"})
    assert s.watershed is False and s.min_size == 30 and s.removed_labels == (1, 3)
    for bad, word in (({"min_size": 1.5}, "min_size"), ({"metric": "diameter"}, "metric"),
                      ({"scale": "auto"}, "unknown setting"), ({"removed_labels": [0]}, "removed_labels"),
                      ({"nm_per_pixel": 0}, "nm_per_pixel"), ({"threshold": float("nan")}, "threshold")):
        with pytest.raises(SaemiError, match=word):
            Settings.from_dict(bad)
    assert Settings.from_dict({}, defaults={"min_size": 99, "not_a_setting": 1}).min_size == 99
    assert Settings().to_dict()["removed_labels"] == []


def test_the_settings_reference_is_current():
    assert (REPO / "docs" / "settings.md").read_text() == schema.markdown_reference(), \
        "docs/settings.md is stale: run python -m saemi.settings > docs/settings.md"


def test_no_setting_name_is_written_by_hand_outside_the_schema():
    """A setting's name appears in code only where it is used (an attribute, a keyword, an output column),
    never in a hand-written list or dict of settings (keys that are all setting names): those are
    generated from the schema. The eight such lists this replaced would each fail here."""
    offenders = []
    for path in sorted((REPO / "saemi").rglob("*.py")):
        if path.name == "settings.py" or path.name == "baseline.py":  # baseline: the Otsu model's own card
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                items = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if len(items) >= 2 and all(i in NAMES for i in items):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {items}")
            if isinstance(node, ast.Dict):
                keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
                if len(keys) >= 2 and all(k in NAMES for k in keys):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {keys}")
    assert not offenders, "\n".join(offenders)
