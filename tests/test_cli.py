"""End-to-end runs of the `counterfeit` command (subprocess) on the tiny preset."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from index.store import ReferenceIndex

TINY = "tiny-clip-test"
VERDICT_KEYS = {"image", "flagged", "brand", "score", "threshold", "matches", "error"}
MATCH_KEYS = {"ref_id": int, "brand": str, "kind": str, "score": float, "source": str}


def run_cli(*args: str, env: dict[str, str], check: bool = False) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "detector.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def info(index_dir: Path, env: dict[str, str]) -> dict:
    return json.loads(run_cli("index", "info", "--index", str(index_dir), "--json", env=env, check=True).stdout)


def check_verdict_schema(v: dict) -> None:
    assert VERDICT_KEYS <= set(v)
    assert isinstance(v["image"], str) and isinstance(v["flagged"], bool)
    if v["error"] is None:
        assert isinstance(v["score"], float) and isinstance(v["brand"], str)
        assert isinstance(v["threshold"], float)
        assert v["flagged"] == (v["score"] >= v["threshold"]) or v["flagged"]
        assert v["matches"], "a scored image against a non-empty index has matches"
        for m in v["matches"]:
            for key, typ in MATCH_KEYS.items():
                assert isinstance(m[key], typ), (key, m)
            assert m["kind"] in ("logo", "product")
            assert m["product_id"] is None or isinstance(m["product_id"], str)
        scores = [m["score"] for m in v["matches"]]
        assert scores == sorted(scores, reverse=True)
        assert v["score"] == pytest.approx(max(scores))
    else:
        assert v["flagged"] is False and v["matches"] == [] and isinstance(v["error"], str)


def test_build_info_add_remove_score(sample_set, tmp_path, cli_env):
    refs = tmp_path / "refs"
    shutil.copytree(sample_set.references_dir, refs)
    brands = sorted(p.name for p in refs.iterdir())
    extra = refs.parent / "later" / brands[0]
    extra.mkdir(parents=True)
    (refs / brands[-1]).rename(extra.parent / brands[-1])  # one brand joins later
    (refs / brands[0] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")

    index_dir = tmp_path / "index"
    proc = run_cli("index", "build", str(refs), "--index", str(index_dir), "--model", TINY, env=cli_env)
    assert proc.returncode == 1, proc.stderr  # the broken file is reported, the rest indexed
    assert "broken.png" in proc.stderr
    assert "shape library: adding" in proc.stderr  # the sync after the progress bar says what it does
    reports = list((index_dir / "reports").glob("build-*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["added"] == len(brands) - 1 and len(report["failed"]) == 1

    got = info(index_dir, cli_env)
    assert got["count"] == len(brands) - 1
    assert got["fingerprint"]["preset"] == TINY
    assert set(got["per_brand"]) == set(brands[:-1])
    assert all(kinds == {"logo": 1} or kinds.get("logo") == 1 for kinds in got["per_brand"].values())

    # Rebuilding the same folder adds nothing (content already indexed).
    proc = run_cli("index", "build", str(refs), "--index", str(index_dir), env=cli_env)
    assert "added 0" in proc.stderr and f"skipped (already indexed) {len(brands) - 1}" in proc.stderr

    run_cli("index", "add", str(extra.parent), "--index", str(index_dir), env=cli_env, check=True)
    assert info(index_dir, cli_env)["count"] == len(brands)

    run_cli("index", "remove", "--index", str(index_dir), "--brand", brands[1], env=cli_env, check=True)
    after = info(index_dir, cli_env)
    assert after["count"] == len(brands) - 1 and brands[1] not in after["per_brand"]

    listings = sample_set.labels_path.parent / "listings"
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    names = sorted(p.name for p in listings.glob("*.jpg"))[:3]
    inputs = [str(listings / names[0]), str(bad), str(listings / names[1]), str(listings / names[2])]
    proc = run_cli("score", "--index", str(index_dir), *inputs, "--json", "--top-k", "3", env=cli_env)
    assert proc.returncode == 1, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [v["image"] for v in lines] == inputs  # input order kept
    for v in lines:
        check_verdict_schema(v)
        assert len(v["matches"]) <= 3
        assert all(m["brand"] != brands[1] for m in v["matches"])  # removed brand is gone
    assert lines[1]["error"] and all(lines[i]["error"] is None for i in (0, 2, 3))


def test_manifest_missing_files_unknown_columns_relative_paths(sample_set, tmp_path, cli_env):
    man_dir = tmp_path / "manifests"
    man_dir.mkdir()
    logos = sorted(sample_set.references_dir.glob("*/logo.png"))[:3]
    rows = [
        {"path": str(logos[0]), "brand": "alpha", "kind": "logo", "product_id": "", "colour": "red"},  # absolute
        {"path": "../" + str(Path("imgs") / "b.png"), "brand": "beta", "kind": "product", "product_id": "SKU-1",
         "colour": ""},
        {"path": "missing.png", "brand": "gamma", "kind": "logo", "product_id": "", "colour": "blue"},
    ]
    (tmp_path / "imgs").mkdir()
    shutil.copy(logos[1], tmp_path / "imgs" / "b.png")
    manifest = man_dir / "refs.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    index_dir = tmp_path / "index"
    proc = run_cli("index", "build", str(manifest), "--index", str(index_dir), "--model", TINY, env=cli_env)
    assert proc.returncode == 1 and "missing.png" in proc.stderr and "file not found" in proc.stderr
    with ReferenceIndex.open(index_dir) as index:
        refs = {r.brand: r for r in index.references()}
    assert set(refs) == {"alpha", "beta"}
    assert refs["alpha"].attributes == {"colour": "red"} and refs["alpha"].kind == "logo"
    assert refs["beta"].product_id == "SKU-1" and refs["beta"].kind == "product"
    assert refs["beta"].source.endswith("b.png")


def test_score_with_the_thorough_profile(tiny_index_dir, sample_set, cli_env):
    images = sorted((sample_set.labels_path.parent / "listings").glob("*.jpg"))[:2]
    proc = run_cli("score", "--index", str(tiny_index_dir), *map(str, images), "--profile", "thorough",
                   "--json", env=cli_env)
    assert proc.returncode == 0, proc.stderr
    verdicts = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [v["image"] for v in verdicts] == [str(p) for p in images]
    for v in verdicts:
        check_verdict_schema(v)
    bad = run_cli("score", "--index", str(tiny_index_dir), str(images[0]), "--profile", "nope", env=cli_env)
    assert bad.returncode == 2 and "--profile" in bad.stderr


def test_score_with_another_model_fails_clearly(tiny_index_dir, sample_set, tmp_path, cli_env):
    import torch

    from detector.models import get_preset
    from detector.models.openclip_backend import build_clip_model

    ckpt = tmp_path / "other.pt"  # same architecture, other weights (seed 1 instead of 0)
    torch.save(build_clip_model(get_preset(TINY), seed=1).state_dict(), ckpt)
    image = next((sample_set.labels_path.parent / "listings").glob("*.jpg"))
    t0 = time.perf_counter()
    proc = run_cli("score", "--index", str(tiny_index_dir), str(image), "--checkpoint", str(ckpt), env=cli_env)
    assert proc.returncode == 2
    assert "another model" in proc.stderr and "weights" in proc.stderr
    assert time.perf_counter() - t0 < 120


def test_interrupted_build_resumes_to_the_same_index(sample_set, tmp_path, cli_env):
    refs = tmp_path / "refs"
    shutil.copytree(sample_set.references_dir, refs)
    # More items so that a kill lands mid-run: several images per brand.
    from PIL import Image, ImageOps

    for logo in sorted(refs.glob("*/logo.png")):
        image = Image.open(logo)
        for i, angle in enumerate((0, 90, 180)):
            ImageOps.expand(image.rotate(angle, expand=True), border=4 + i).save(logo.parent / f"logo_v{i}.png")
    n_items = len(list(refs.glob("*/*.png")))

    full = tmp_path / "full"
    run_cli("index", "build", str(refs), "--index", str(full), "--model", TINY, "--chunk-size", "2",
            env=cli_env, check=True)

    partial = tmp_path / "partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector.cli", "index", "build", str(refs), "--index", str(partial),
         "--model", TINY, "--chunk-size", "2"],
        env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        manifest = partial / "manifest.json"
        if manifest.exists():
            try:
                count = json.loads(manifest.read_text()).get("count", 0)
            except (json.JSONDecodeError, OSError):
                count = 0
            if count >= 2:
                proc.kill()  # SIGKILL: no chance to clean up
                killed_at = count
                break
        time.sleep(0.02)
    proc.wait()
    assert killed_at is not None and killed_at < n_items, "the build should be killed mid-run"

    with ReferenceIndex.open(partial) as index:  # readable and consistent after the kill
        assert 0 < len(index) < n_items
    run_cli("index", "build", str(refs), "--index", str(partial), env=cli_env, check=True)

    def snapshot(path: Path) -> dict[str, tuple]:
        with ReferenceIndex.open(path) as index:
            refs_by_sha = {r.sha256: r for r in index.references()}
            ids = {r.id: r.sha256 for r in refs_by_sha.values()}
            probe = np.eye(index.dim, dtype=np.float32)[:8]
            scores, found = index.search_vectors(probe, len(index))
        return {
            "records": {sha: (r.brand, r.kind, r.source) for sha, r in refs_by_sha.items()},
            "ranking": [[ids[i] for i in row if i >= 0] for row in found.tolist()],
            "scores": np.round(scores, 5).tolist(),
        }

    assert len(snapshot(partial)["records"]) == n_items
    assert snapshot(partial) == snapshot(full)


def test_quickstart_main_job_end_to_end(tmp_path):
    import io

    from detector.quickstart import run_quickstart

    out = io.StringIO()
    code = run_quickstart(tmp_path / "qs", preset=TINY, embedder_options={"device": "cpu"}, n_brands=4, stream=out)
    text = out.getvalue()
    assert code == 0
    assert "listings with an indexed brand caught" in text and "timings:" in text
    verdicts = (tmp_path / "qs" / f"verdicts-{TINY}.jsonl").read_text().splitlines()
    labels = (tmp_path / "qs" / "sample" / "labels.jsonl").read_text().splitlines()
    assert len(verdicts) == len(labels) > 0
    for line in verdicts:
        check_verdict_schema(json.loads(line))
    # the review portal on the sample queue: the command and the tokens (the review extra)
    assert f"--queue {tmp_path / 'qs' / 'review.sqlite'}" in text and "log in as the platform analyst: analyst." in text
    assert (tmp_path / "qs" / "review-tokens.txt").stat().st_mode & 0o077 == 0


def test_index_search_params_shows_sets_and_refuses_unknown_names(tmp_path, capsys):
    from detector.cli import main
    from index.records import Fingerprint, NewReference

    fp = Fingerprint(preset="tiny", arch="test:mlp", weights="random:0", preprocess="{}", dim=8)
    vecs = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    with ReferenceIndex.create(tmp_path / "ix", fingerprint=fp, factory="IVF4,Flat", search_params={"nprobe": 1}) as ix:
        ix.add([NewReference(brand="b", sha256=f"{i:064x}", source=f"{i}") for i in range(64)],
               vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    index = str(tmp_path / "ix")
    assert main(["index", "search-params", "--index", index]) == 0
    assert json.loads(capsys.readouterr().out)["search_params"] == {"nprobe": 1}
    assert main(["index", "search-params", "--index", index, "--set", "nprobe=4"]) == 0
    assert json.loads(capsys.readouterr().out)["search_params"] == {"nprobe": 4}
    assert main(["index", "search-params", "--index", index, "--set", "efSearch=9"]) != 0
    assert "efSearch" in capsys.readouterr().err
    with ReferenceIndex.open(tmp_path / "ix") as reopened:
        assert reopened.search_defaults == {"nprobe": 4}
