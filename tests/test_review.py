"""Brand review portal: the queue, isolation between brands, CSRF, the audit log, tuning and
export from decisions, the service wiring. FastAPI's TestClient in-process; fake verdicts."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy", reason="the review extra is not installed")

from fastapi import FastAPI
from fastapi.testclient import TestClient
from review_support import CONTEXT, fill, login, page_csrf, photo, users, verdict
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from detector.evaluation.labels import read_labels
from detector.review.labelled import export_labels
from detector.review.models import Decision, ReviewItem, User
from detector.review.recorder import QueueRecorder
from detector.review.store import QueueFilter, ReviewStore
from detector.review.tuning import tune_from_reviews
from detector.review.users import Principal
from detector.review.web import add_review_portal
from detector.thresholds import Thresholds

ANALYST = Principal(0, "analyst", "analyst", None)


@pytest.fixture()
def store(tmp_path: Path):
    s = ReviewStore(tmp_path / "review.sqlite")
    yield s
    s.close()


@pytest.fixture()
def portal(store: ReviewStore, tmp_path: Path):
    """A filled queue (acme: 3 items, zeta: 2), users, and an app with only the portal."""
    ids = fill(store, tmp_path, {"acme": 3, "zeta": 2})
    tokens = users(store, "acme", "zeta")
    app = FastAPI()
    add_review_portal(app, store)
    return app, ids, tokens


# ---------------------------------------------------------------------- the queue
def test_flagged_verdict_is_recorded_once(store: ReviewStore):
    recorder = QueueRecorder(store, near_margin=0.05)
    v = verdict("acme", 0.9)
    first = recorder.record(v, CONTEXT, image=photo(1), listing_id="L1", seller_id="S1")
    assert first is not None
    assert recorder.record(v, CONTEXT, image=photo(1), listing_id="L1", seller_id="S1") is None
    assert recorder.record(v, CONTEXT, image=photo(1), listing_id="L2") is not None  # another listing
    assert recorder.record(verdict("acme", 0.5), CONTEXT, image=photo(2), listing_id="L3") is None
    near = recorder.record(verdict("acme", 0.77), CONTEXT, image=photo(3), listing_id="L4")
    page = store.queue(ANALYST, QueueFilter())
    assert page.total == 3
    item = store.item(ANALYST, first)
    assert (item.listing_id, item.seller_id, item.brand, item.kind) == ("L1", "S1", "acme", "flagged")
    assert (item.score, item.threshold, item.threshold_source, item.match_key) == (0.9, 0.8, "default", "logo:verified")
    assert item.box == [60, 50, 180, 150] and item.matches[0]["ref_id"] == 3
    assert item.model_preset == "fake" and item.index_generation == 7 and item.created_at is not None
    assert store.image_file(item.image_blob).read_bytes() == photo(1)  # content-addressed, unchanged
    assert store.item(ANALYST, near).kind == "near"


def test_large_images_are_bounded(tmp_path: Path):
    s = ReviewStore(tmp_path / "q.sqlite", max_image_side=100)
    item_id = QueueRecorder(s).record(verdict("acme", 0.9), CONTEXT, image=photo(1, (800, 600)), listing_id="L")
    item = s.item(ANALYST, item_id)
    from PIL import Image

    with Image.open(s.image_file(item.image_blob)) as img:
        assert max(img.size) == 100
    assert (item.image_width, item.image_height) == (800, 600)  # the box stays in original pixels
    s.close()


# ---------------------------------------------------------------------- security
def test_brand_isolation(portal, store: ReviewStore):
    app, ids, tokens = portal
    acme_item = ids["acme"][0]
    with TestClient(app) as zeta:
        csrf = login(zeta, tokens["zeta"])
        queue = zeta.get("/review/queue").text
        assert "acme" not in queue and "zeta-0" in queue
        assert zeta.get(f"/review/items/{acme_item}").status_code == 404
        assert zeta.get(f"/review/items/{acme_item}/image").status_code == 404
        assert zeta.get(f"/review/items/{acme_item}/references/3").status_code == 404
        assert "acme" not in zeta.get("/review/queue?brand=acme").text  # the filter cannot widen its view
        refused = zeta.post(f"/review/items/{acme_item}/decision", data={"decision": "rejected", "csrf": csrf})
        assert refused.status_code == 404
        assert zeta.get("/review/overview").status_code == 404  # the analyst's view
    assert store.item(ANALYST, acme_item).status == "pending"
    with store.session() as db:
        assert db.scalars(select(Decision)).all() == []


def test_brand_b_sees_an_empty_queue(store: ReviewStore, tmp_path: Path):
    ids = fill(store, tmp_path, {"acme": 2})
    tokens = users(store, "acme", "zeta")
    app = FastAPI()
    add_review_portal(app, store)
    with TestClient(app) as zeta:
        login(zeta, tokens["zeta"])
        page = zeta.get("/review/queue")
        assert "Nothing to review here" in page.text and "0 item(s)" in page.text
        assert zeta.get(f"/review/items/{ids['acme'][0]}").status_code == 404


def test_csrf_is_required_on_every_form(portal, store: ReviewStore):
    app, ids, tokens = portal
    item = ids["acme"][0]
    with TestClient(app) as client:
        page = client.get("/review/login")
        assert client.post("/review/login", data={"token": tokens["acme"]}, follow_redirects=False).status_code == 403
        assert client.post("/review/login", data={"token": tokens["acme"], "csrf": "forged"},
                           follow_redirects=False).status_code == 403
        assert page.status_code == 200
        csrf = login(client, tokens["acme"])
        assert client.post(f"/review/items/{item}/decision", data={"decision": "confirmed"}).status_code == 403
        assert client.post(f"/review/items/{item}/decision",
                           data={"decision": "confirmed", "csrf": "x" + csrf}).status_code == 403
        assert client.post("/review/logout", follow_redirects=False).status_code == 403
        assert store.item(ANALYST, item).status == "pending"
        ok = client.post(f"/review/items/{item}/decision", data={"decision": "confirmed", "csrf": csrf},
                         follow_redirects=False)
        assert ok.status_code == 303
        assert store.item(ANALYST, item).status == "confirmed"


def test_login_tokens_sessions_and_headers(portal, store: ReviewStore):
    app, _, tokens = portal
    secret = tokens["acme"].split(".", 1)[1]
    with store.session() as db:
        for user in db.scalars(select(User)):
            assert user.token_hash.startswith("scrypt$") and secret not in user.token_hash
    with TestClient(app) as client:
        assert client.get("/review/queue", follow_redirects=False).headers["location"] == "/review/login"
        page = client.get("/review/login")
        csrf = page_csrf(page.text)
        bad = client.post("/review/login", data={"token": "brand-acme.wrong", "csrf": csrf})
        assert bad.status_code == 401
        page = client.get("/review/login")
        answer = client.post("/review/login", data={"token": tokens["acme"], "csrf": page_csrf(page.text)},
                             follow_redirects=False)
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/review" in cookie
        queue = client.get("/review/queue")
        assert "default-src 'self'" in queue.headers["content-security-policy"]
        assert queue.headers["x-frame-options"] == "DENY"
        client.post("/review/logout", data={"csrf": page_csrf(queue.text)})
        assert client.get("/review/queue", follow_redirects=False).status_code == 303


def test_audit_log_records_a_changed_decision(portal, store: ReviewStore):
    app, ids, tokens = portal
    item = ids["acme"][1]
    with TestClient(app) as client:
        csrf = login(client, tokens["acme"])
        client.post(f"/review/items/{item}/decision", data={"decision": "confirmed", "csrf": csrf})
        client.post(f"/review/items/{item}/decision",
                    data={"decision": "rejected", "note": "authorised reseller", "csrf": csrf})
        assert "was confirmed" in client.get(f"/review/items/{item}").text
    with store.session() as db:
        rows = db.scalars(select(Decision).where(Decision.item_id == item).order_by(Decision.id)).all()
        assert [(r.user_name, r.decision, r.previous) for r in rows] == [
            ("brand-acme", "confirmed", None), ("brand-acme", "rejected", "confirmed")]
        assert rows[1].note == "authorised reseller" and rows[1].created_at is not None
        with pytest.raises(DatabaseError, match="append-only"):
            db.execute(text("UPDATE review_decisions SET decision = 'confirmed'"))
        db.rollback()
        with pytest.raises(DatabaseError, match="append-only"):
            db.execute(text("DELETE FROM review_decisions"))
    assert store.item(ANALYST, item).status == "rejected"


def test_analyst_sees_all_brands_and_statistics(portal, store: ReviewStore):
    app, ids, tokens = portal
    with TestClient(app) as client:
        csrf = login(client, tokens["analyst"])
        assert client.get("/review", follow_redirects=False).headers["location"] == "/review/overview"
        client.post(f"/review/items/{ids['zeta'][0]}/decision", data={"decision": "confirmed", "csrf": csrf})
        client.post(f"/review/items/{ids['zeta'][0]}/decision", data={"decision": "rejected", "csrf": csrf})
        overview = client.get("/review/overview").text
        assert "acme" in overview and "zeta" in overview
        queue = client.get("/review/queue?order=score&min_score=0.86").text
        assert queue.count('class="thumb"') == 3  # acme 0.86, 0.87, zeta 0.86 (zeta 0.85 is decided)
        item = client.get(f"/review/items/{ids['acme'][0]}").text
        assert "Flagged as acme" in item and "geometric check found 25 matching keypoints" in item
        assert 'id="reference-photo"' in item and "<rect" in item
    from detector.review.stats import brand_stats

    zeta = {s.brand: s for s in brand_stats(store)}["zeta"]
    assert (zeta.backlog, zeta.rejected, zeta.decisions, zeta.reversals) == (1, 1, 2, 1)


# ---------------------------------------------------------------------- decisions feed tuning
def _decide_many(store: ReviewStore, brand: str, scores: list[float], decision: str, start: int) -> None:
    recorder = QueueRecorder(store, near_margin=1.0)
    for i, score in enumerate(scores):
        item = recorder.record(verdict(brand, score, threshold=0.8), CONTEXT, image=photo(start + i),
                               listing_id=f"{brand}-{decision}-{i}")
        assert store.decide(ANALYST, item, decision) is not None


def test_tune_from_reviews_moves_thresholds_the_expected_way(store: ReviewStore):
    # acme: counterfeits confirmed well below the 0.8 threshold -> its threshold should fall.
    _decide_many(store, "acme", [0.60 + i * 0.01 for i in range(25)], "confirmed", 0)
    _decide_many(store, "acme", [0.30 + i * 0.01 for i in range(10)], "rejected", 100)
    # zeta: many rejections above 0.8, confirmations only from 0.9 -> its threshold should rise.
    _decide_many(store, "zeta", [0.90 + i * 0.004 for i in range(25)], "confirmed", 200)
    _decide_many(store, "zeta", [0.80 + i * 0.004 for i in range(20)], "rejected", 300)
    # kilo: confirmations only, all above its threshold -> nothing says it flags too much: kept.
    _decide_many(store, "kilo", [0.85 + i * 0.005 for i in range(22)], "confirmed", 400)
    result = tune_from_reviews(store, target_precision=0.95, min_support=20)
    by_brand = {b.brand: b for b in result.brands}
    assert by_brand["acme"].after < 0.8 - 0.1 and by_brand["zeta"].after > 0.8
    assert (by_brand["acme"].confirmed, by_brand["acme"].rejected) == (25, 10)
    assert by_brand["acme"].status == "set" and by_brand["zeta"].status == "set"
    assert (by_brand["kilo"].status, by_brand["kilo"].after) == ("kept", 0.8)
    assert "acme" in result.summary() and result.result.met
    # With a base table only the brand entries change.
    base = Thresholds(default=0.8, kinds={"logo:verified": 0.75}, brands={"other": {"default": 0.5}})
    based = tune_from_reviews(store, target_precision=0.95, min_support=20, base=base)
    t = based.thresholds
    assert (t.default, t.kinds, t.brands["other"]) == (0.8, {"logo:verified": 0.75}, {"default": 0.5})
    assert t.for_match("acme", "logo:verified").value < 0.7 and t.for_match("zeta", "logo:verified").value > 0.8
    assert "kilo" not in t.brands


def test_cli_tune_from_reviews_and_export(store: ReviewStore, tmp_path: Path, capsys):
    from detector.cli import main
    from detector.thresholds import load_thresholds

    _decide_many(store, "acme", [0.60 + i * 0.01 for i in range(25)], "confirmed", 0)
    _decide_many(store, "acme", [0.30 + i * 0.01 for i in range(10)], "rejected", 100)
    out = tmp_path / "thr.json"
    assert main(["tune", "--from-reviews", store.url, "--out", str(out), "--target-precision", "0.95"]) == 0
    printed = capsys.readouterr().out
    assert "acme" in printed and "35 decisions (25 confirmed, 10 rejected)" in printed
    assert load_thresholds(out).for_match("acme", "logo:verified").value < 0.7
    assert main(["reviews", "export", store.url, "--out", str(tmp_path / "set.jsonl")]) == 0
    assert len(read_labels(tmp_path / "set.jsonl").queries) == 35
    assert main(["tune", "--out", str(out)]) == 2  # neither --eval nor --from-reviews


def test_export_is_a_labelled_set_eval_reads(store: ReviewStore, tmp_path: Path):
    _decide_many(store, "acme", [0.9, 0.95], "confirmed", 0)
    _decide_many(store, "acme", [0.85], "rejected", 10)
    report = export_labels(store, tmp_path / "out" / "reviews.jsonl")
    labels = read_labels(report.path)
    assert report.rows == 3 and not labels.missing_images()
    assert sorted((q.brand or "-") for q in labels.queries) == ["-", "acme", "acme"]


# ---------------------------------------------------------------------- the service
def test_service_queues_flagged_verdicts_and_reports_metrics(tmp_path: Path):
    from test_service import FakeDetector, metric, png

    from detector.service.app import ServiceSettings, create_app

    db = tmp_path / "q.sqlite"
    app = create_app(lambda: FakeDetector(), ServiceSettings(queue_url=str(db)))
    with TestClient(app) as client:
        for _ in range(50):
            if client.get("/readyz").status_code == 200:
                break
            __import__("time").sleep(0.05)
        for _ in range(2):  # the same image of the same listing twice: queued once
            answer = client.post("/v1/score", files=[("files", ("a.png", png(40), "image/png"))],
                                 data={"listing_id": "L9", "seller_id": "S9"})
            assert answer.status_code == 200 and answer.json()["results"][0]["flagged"]
        text_metrics = client.get("/metrics").text
        assert metric(text_metrics, "counterfeit_review_backlog", brand="w40") == 1
        assert metric(text_metrics, "counterfeit_review_decisions", brand="w40", decision="confirmed") == 0
        assert client.get("/review/login").status_code == 200
    s = ReviewStore(db)
    with s.session() as session:
        items = session.scalars(select(ReviewItem)).all()
        assert [(i.listing_id, i.seller_id, i.brand, i.model_preset, i.index_generation) for i in items] == [
            ("L9", "S9", "w40", "fake", 1)]
    s.close()


def test_cli_score_queues_a_batch_run(tiny_index_dir: Path, sample_set, tmp_path: Path, capsys):
    from detector.cli import main

    listings = sorted((sample_set.labels_path.parent / "listings").glob("*.jpg"))[:2]
    db = tmp_path / "batch.sqlite"
    args = ["score", "--index", str(tiny_index_dir), *map(str, listings), "--device", "cpu",
            "--queue", str(db), "--queue-margin", "100"]  # margin: every verdict with a brand is queued
    assert main(args) == 0 and main(args) == 0  # the second run queues nothing new
    assert "queued 0 new item(s)" in capsys.readouterr().err
    s = ReviewStore(db)
    page = s.queue(ANALYST, QueueFilter(status=None))
    assert page.total == 2 and {i.listing_id for i in page.items} == {str(p) for p in listings}
    assert all(i.model_preset == "tiny-clip-test" and i.image_blob for i in page.items)
    s.close()
