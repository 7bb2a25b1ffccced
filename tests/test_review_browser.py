"""The brand review portal in a real browser: headless Chromium (Debian's ``chromium`` package)
driven by Playwright through ``executable_path`` (``playwright install`` is never used).

The queue is the quickstart's sample queue (:func:`detector.review.sample.fill_sample_queue` on
the tiny model's verdicts for the sample set); the service runs in uvicorn on a free loopback
port. A brand's reviewer logs in, sees the listing photo and the matched reference, presses the
Confirm shortcut, and the decision is stored; the analyst's view is captured too. Screenshots go
to ``tests/artifacts/review-portal/`` (ignored by git). Skipped, with the reason, where Chromium
or Playwright is missing; CI (.ci/run) installs both and sets ``COUNTERFEIT_REQUIRE_BROWSER=1``,
which turns a skip into a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRED = os.environ.get("COUNTERFEIT_REQUIRE_BROWSER") == "1"  # set by .ci/run: never skip there
if not REQUIRED:
    pytest.importorskip("sqlalchemy", reason="the review extra is not installed")
    pytest.importorskip("playwright.sync_api", reason="playwright (test extra) is not installed")
from playwright import sync_api
from sqlalchemy import select

from detector.review.models import Decision, ReviewItem
from detector.review.recorder import RecordContext
from detector.review.sample import SampleQueue, fill_sample_queue
from detector.review.store import ReviewStore

ARTIFACTS = Path(__file__).parent / "artifacts" / "review-portal"


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "chromium", "chromium-browser"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def sample_queue(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The quickstart's queue: ``$COUNTERFEIT_REVIEW_SAMPLE`` names a ``counterfeit quickstart``
    output folder to use as it is; otherwise the tiny model's sample queue is built here."""
    existing = os.environ.get("COUNTERFEIT_REVIEW_SAMPLE")
    if existing:
        return _existing_queue(Path(existing))
    from detector.bench.dataset import read_labels
    from detector.scoring import Detector

    sample_set = request.getfixturevalue("sample_set")
    tiny_index_dir = request.getfixturevalue("tiny_index_dir")

    out = tmp_path_factory.mktemp("quickstart-out")
    labels = read_labels(sample_set.labels_path)
    paths = [sample_set.labels_path.parent / label.image for label in labels]
    with Detector.open(tiny_index_dir, device="cpu") as det:
        verdicts = det.score_many(paths, [label.image for label in labels])
        queue = fill_sample_queue(out, verdicts, paths, RecordContext.of(det))
    assert queue.brands, "the sample queue is empty"
    return queue


def _existing_queue(out: Path) -> SampleQueue:
    tokens = dict(line.split(" ", 1) for line in (out / "review-tokens.txt").read_text().split("\n") if line)
    brands = tuple(name[len("brand-"):] for name in tokens if name.startswith("brand-"))
    return SampleQueue(out / "review.sqlite", out / "review-tokens.txt", tokens, {}, brands)


def test_brand_confirms_with_the_keyboard_in_chromium(sample_queue):
    chromium = _chromium()
    if chromium is None:
        if REQUIRED:
            pytest.fail("COUNTERFEIT_REQUIRE_BROWSER=1 but no chromium is installed")
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run does)")
    from test_service import FakeDetector, LiveServer

    from detector.service.app import ServiceSettings, create_app

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    brand_user = sample_queue.brand_user()
    brand = brand_user[len("brand-"):]
    app = create_app(lambda: FakeDetector(), ServiceSettings(queue_url=str(sample_queue.db_path)))
    with LiveServer(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{server.url}/review")
            page.fill("#token", sample_queue.tokens[brand_user])
            page.click("button[type=submit]")
            page.wait_for_url("**/review/queue")
            assert f"{brand}: review queue" in page.inner_text("h1")
            page.screenshot(path=str(ARTIFACTS / "brand-queue.png"), full_page=True)

            page.click("table.queue tbody tr td a")
            page.wait_for_selector("#listing-photo")
            item_id = int(page.url.rstrip("/").split("/")[-1])
            for selector in ("#listing-photo", "#reference-photo"):
                loaded = page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0")
                assert loaded, f"{selector} did not load"
            page.screenshot(path=str(ARTIFACTS / "brand-item.png"), full_page=True)
            with page.expect_navigation():
                page.keyboard.press("c")  # the Confirm shortcut

            analyst = browser.new_page(viewport={"width": 1280, "height": 800})
            analyst.goto(f"{server.url}/review/login")
            analyst.fill("#token", sample_queue.tokens["analyst"])
            analyst.click("button[type=submit]")
            analyst.wait_for_url("**/review/overview")
            assert brand in analyst.inner_text("table.stats")
            analyst.screenshot(path=str(ARTIFACTS / "analyst-overview.png"), full_page=True)
        finally:
            browser.close()
    store = ReviewStore(sample_queue.db_path)
    try:
        with store.session() as db:
            item = db.get(ReviewItem, item_id)
            assert (item.brand, item.status, item.decided_by) == (brand, "confirmed", brand_user)
            log = db.scalars(select(Decision).where(Decision.item_id == item_id)).all()
            assert [(d.user_name, d.decision, d.previous) for d in log] == [(brand_user, "confirmed", None)]
    finally:
        store.close()
