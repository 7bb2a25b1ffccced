"""detector.thresholds: resolution order, validation, file round trips."""

from __future__ import annotations

import json

import pytest

from detector.errors import ConfigError
from detector.thresholds import Thresholds, load_thresholds, save_thresholds, threshold_key

TABLE = {
    "version": "v1",
    "default": 0.8,
    "kinds": {"logo": 0.7},
    "brands": {"acme": 0.6, "globex": {"default": 0.65, "product": 0.9}},
}


def test_most_specific_entry_applies():
    t = Thresholds.from_dict(TABLE)
    assert t.for_match("globex", "product").source == "brand:globex:product"
    assert t.for_match("globex", "product").value == 0.9
    assert (t.for_match("globex", "logo").value, t.for_match("globex", "logo").source) == (0.65, "brand:globex")
    assert t.for_match("acme", "product").value == 0.6
    assert t.for_match("other", "logo").source == "kind:logo"
    assert (t.for_match("other", "product").value, t.for_match("other", "product").source) == (0.8, "default")


def test_verified_evidence_has_its_own_entry_and_falls_back_to_its_kind():
    t = Thresholds.from_dict(
        {"default": 0.9, "kinds": {"logo": 0.95, "logo:verified": 0.7}, "brands": {"acme": {"logo": 0.8}}}
    )
    assert (t.for_match("x", "logo:verified").value, t.for_match("x", "logo:verified").source) == (
        0.7, "kind:logo:verified"
    )
    assert t.for_match("x", "logo").value == 0.95
    assert t.for_match("acme", "logo:verified").source == "brand:acme:logo"  # the brand's own wins
    assert t.for_match("x", "product:verified").source == "default"  # no product entry at all
    plain = Thresholds.from_dict(TABLE)
    assert plain.for_match("other", "logo:verified").source == "kind:logo"  # old tables keep working
    assert t.keys_in_use() == ("logo", "product", "logo:verified")
    assert plain.keys_in_use() == ("logo", "product")
    assert threshold_key("logo", True) == "logo:verified" and threshold_key("product", False) == "product"


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path, suffix):
    t = Thresholds.from_dict(TABLE)
    path = tmp_path / f"thr{suffix}"
    save_thresholds(t, path)
    assert load_thresholds(path) == t
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "default"),
        ({"default": "high"}, "expected a number"),
        ({"default": 5}, "outside the score range"),
        ({"default": 0.5, "kinds": {"banner": 0.5}}, "unknown kind 'banner'"),
        ({"default": 0.5, "brands": {"a": {"video": 0.5}}}, "unknown key 'video'"),
        ({"default": 0.5, "kinds": {"logo:maybe": 0.5}}, "unknown kind 'logo:maybe'"),
    ],
)
def test_invalid_tables_name_the_field(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        load_thresholds(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_thresholds(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid"):
        load_thresholds(broken)


def test_shipped_threshold_files_are_valid():
    from detector.thresholds import THRESHOLDS_DIR

    files = sorted(THRESHOLDS_DIR.glob("*.json"))
    assert files
    for path in files:
        load_thresholds(path)
