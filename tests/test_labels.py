"""Labelled eval-set reader: JSONL and CSV, bad rows reported with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.evaluation.labels import LabelsError, read_labels
from detector.evaluation.scores import Query


def test_jsonl_with_nulls_and_extra_fields(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"x")
    f = tmp_path / "labels.jsonl"
    f.write_text(
        '{"image": "img/a.jpg", "brand": "acme", "kind": "logo", "group": "test", "box": [1, 2, 3, 4]}\n'
        "\n"
        '{"image": "img/b.jpg", "brand": null}\n'
        '{"image": "img/c.jpg", "brand": "  ", "group": ""}\n'
    )
    labels = read_labels(f)
    assert labels.queries == (
        Query("img/a.jpg", "acme", "logo", "test"),
        Query("img/b.jpg", None),
        Query("img/c.jpg", None),
    )
    assert labels.image_path(0) == tmp_path / "img" / "a.jpg"
    assert labels.missing_images() == [tmp_path / "img" / "b.jpg", tmp_path / "img" / "c.jpg"]


def test_csv_with_bom_empty_brand_and_extra_column(tmp_path: Path) -> None:
    f = tmp_path / "labels.csv"
    f.write_text(
        "\ufeffimage,brand,group,notes\na.jpg,acme,val,fine\nb.jpg,,val,\n", encoding="utf-8"
    )
    labels = read_labels(f)
    assert labels.queries == (
        Query("a.jpg", "acme", None, "val"),
        Query("b.jpg", None, None, "val"),
    )


def test_jsonl_errors_name_every_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "labels.jsonl"
    f.write_text(
        '{"image": "a.jpg", "brand": "acme"}\n'  # 1 ok
        '{"image": "b.jpg", "brand": 3}\n'  # 2 brand not a string
        "not json\n"  # 3
        '["a list"]\n'  # 4
        '{"brand": "acme"}\n'  # 5 no image
        '{"image": "a.jpg"}\n'  # 6 duplicate of line 1
        '{"image": "c.jpg", "kind": "poster"}\n'  # 7 unknown kind
    )
    with pytest.raises(LabelsError) as info:
        read_labels(f)
    lines = [n for n, _ in info.value.problems]
    assert lines == [2, 3, 4, 5, 6, 7]
    text = str(info.value)
    assert "line 3: not valid JSON" in text and "already labelled on line 1" in text
    assert "unknown kind 'poster'" in text and "'brand' must be a string" in text


def test_csv_errors(tmp_path: Path) -> None:
    f = tmp_path / "labels.csv"
    f.write_text("path,brand\na.jpg,acme\n")
    with pytest.raises(LabelsError, match="line 1: CSV header must name an 'image' column"):
        read_labels(f)
    f.write_text("image,brand\na.jpg,acme\nb.jpg,acme,extra\n,acme\n")
    with pytest.raises(LabelsError) as info:
        read_labels(f)
    assert [n for n, _ in info.value.problems] == [3, 4]


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="unknown labels format"):
        read_labels(tmp_path / "labels.txt")
    with pytest.raises(LabelsError, match="cannot read"):
        read_labels(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(LabelsError, match="no labelled rows"):
        read_labels(tmp_path / "empty.jsonl")
