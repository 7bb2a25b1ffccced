"""HTTP service through a real uvicorn server on loopback.

Two layers: a fake detector (fast, deterministic: its verdict encodes the image's width, so
each caller can check it got its own result) for limits, errors, auth and batching; then the
real tiny-clip-test pipeline for end-to-end scoring, admin writes and reloads under load.
"""

from __future__ import annotations

import asyncio
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import uvicorn
from PIL import Image, ImageDraw
from prometheus_client.parser import text_string_to_metric_families

from detector.service.app import ServiceSettings, create_app
from detector.verdict import Verdict
from index.records import Fingerprint

ADMIN = "admin-token-0123456789"
SCORER = "score-token-0123456789"


# ---------------------------------------------------------------------- live server
class LiveServer:
    """uvicorn in a thread, on a pre-bound loopback socket (no port race)."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                if c.get("/readyz").status_code == 200:
                    return
                time.sleep(0.05)
        raise RuntimeError("service did not become ready")


# ---------------------------------------------------------------------- fake detector
@dataclass(frozen=True)
class _Info:
    count: int
    generation: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": "/secret/server/path", "count": self.count, "generation": self.generation}


class FakeIndex:
    def __init__(self, generation: int = 1) -> None:
        self.generation = generation
        self.path = Path("/nonexistent")

    def info(self) -> _Info:
        return _Info(count=3, generation=self.generation)


@dataclass(frozen=True)
class _Analysis:
    verdict: Verdict


@dataclass(frozen=True)
class _Config:
    max_pixels: int = 10_000_000


@dataclass(frozen=True)
class _Thresholds:
    version: str = "test-v1"
    score: str = "fused"


class FakeDetector:
    """Flags an image as brand ``w<width>``; records batch sizes and the threads it ran on."""

    fingerprint = Fingerprint(
        preset="fake", arch="fake:arch", weights="random:0", preprocess="{}", dim=8
    )

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.index = FakeIndex()
        self.thresholds = _Thresholds()
        self.config = _Config()
        self.embedder = None
        self.reloads = 0

    def analyse_images(
        self, images: Sequence[Image.Image], names: Sequence[str]
    ) -> list[_Analysis]:
        self.batches.append(len(images))
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("boom at /very/secret/path")
        if self.delay:
            time.sleep(self.delay)
        return [
            _Analysis(
                Verdict(
                    image=n,
                    flagged=True,
                    brand=f"w{img.width}",
                    score=img.width / 1000,
                    threshold=0.5,
                    threshold_source="default",
                )
            )
            for img, n in zip(images, names)
        ]

    def reload_index(self) -> bool:
        self.reloads += 1
        self.index = FakeIndex(self.index.generation + 1)
        return True

    def close(self) -> None:
        pass


def png(width: int = 40, height: int = 30, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of sample ``name{labels}`` in a /metrics answer (parsed by prometheus_client)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


@pytest.fixture()
def serve_fake() -> Iterator[Callable[..., tuple[LiveServer, FakeDetector]]]:
    """Start a live server around a FakeDetector; ``serve_fake(settings, detector, loader)``."""
    stack: list[LiveServer] = []

    def start(
        settings: ServiceSettings | None = None,
        detector: FakeDetector | None = None,
        loader: Callable[[], Any] | None = None,
        wait: bool = True,
    ) -> tuple[LiveServer, FakeDetector]:
        det = detector or FakeDetector()
        server = LiveServer(create_app(loader or (lambda: det), settings or ServiceSettings()))
        stack.append(server.__enter__())
        if wait:
            server.wait_ready()
        return server, det

    yield start
    for server in stack:
        server.__exit__()


# ---------------------------------------------------------------------- fake-detector tests
def test_health_ready_and_loading(serve_fake):
    release = threading.Event()
    det = FakeDetector()

    def slow_loader() -> FakeDetector:
        release.wait(10)
        return det

    server, _ = serve_fake(loader=slow_loader, wait=False)
    with server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        not_ready = c.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["error"]["code"] == "not_ready"
        assert c.post("/v1/score", files={"files": ("a.png", png())}).status_code == 503
        release.set()
        server.wait_ready()
        assert c.get("/readyz").json()["status"] == "ready"


def test_failed_load_is_reported_not_ready(serve_fake):
    def broken() -> FakeDetector:
        raise RuntimeError("no index here")

    server, _ = serve_fake(loader=broken, wait=False)
    with server.client() as c:
        for _ in range(100):
            body = c.get("/readyz").json()
            if body["error"]["code"] == "load_failed":
                break
            time.sleep(0.02)
        assert body["error"]["code"] == "load_failed"
        assert "no index here" in body["error"]["message"]
        assert c.get("/healthz").status_code == 200


def test_score_passes_ids_through_and_keeps_order(serve_fake):
    server, det = serve_fake()
    files = [("files", (f"img{w}.png", png(w, 20), "image/png")) for w in (31, 52, 73)]
    with server.client() as c:
        r = c.post("/v1/score", files=files, data={"listing_id": "L-1", "seller_id": "S-9"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["listing_id"], body["seller_id"]) == ("L-1", "S-9")
    assert [v["brand"] for v in body["results"]] == ["w31", "w52", "w73"]
    assert [v["image"] for v in body["results"]] == ["img31.png", "img52.png", "img73.png"]
    assert set(body["results"][0]) == {
        "image",
        "flagged",
        "brand",
        "score",
        "threshold",
        "threshold_source",
        "matches",
        "box",
        "error",
    }
    assert det.batches == [3]
    assert det.threads == {"model_0"}  # the model ran on the model thread, not the event loop


def test_bad_images_inside_a_request_and_alone(serve_fake):
    server, det = serve_fake()
    truncated = png(60, 40)[:50]
    with server.client() as c:
        mixed = c.post(
            "/v1/score",
            files=[
                ("files", ("good.png", png(41, 20))),
                ("files", ("bad.png", truncated)),
                ("files", ("notes.txt", b"hello, not an image")),
                ("files", ("good2.png", png(42, 20))),
            ],
        )
        assert mixed.status_code == 200
        results = mixed.json()["results"]
        assert [r["brand"] for r in results] == ["w41", None, None, "w42"]
        assert results[1]["error"] and results[2]["error"] and results[0]["error"] is None
        assert results[1]["image"] == "bad.png"

        alone = c.post("/v1/score", files={"files": ("x.png", truncated)})
        assert alone.status_code == 422
        assert alone.json()["error"]["code"] == "invalid_image"
        assert alone.json()["results"][0]["error"]

        empty = c.post("/v1/score", files={"files": ("empty.png", b"")})
        assert empty.status_code == 422 and empty.json()["error"]["code"] == "invalid_image"

        # The server keeps serving after every bad request.
        assert (
            c.post("/v1/score", files={"files": ("ok.png", png(43, 20))}).json()["results"][0][
                "brand"
            ]
            == "w43"
        )
    assert det.batches == [2, 1]  # bad images never reach the model


def test_request_validation_errors(serve_fake):
    server, _ = serve_fake(ServiceSettings(max_files=3, max_pixels=5_000))
    with server.client() as c:
        missing = c.post("/v1/score", data={"listing_id": "x"})
        assert missing.status_code == 422 and missing.json()["error"]["code"] == "invalid_request"

        too_many = c.post("/v1/score", files=[("files", (f"{i}.png", png())) for i in range(4)])
        assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_files"

        huge = c.post("/v1/score", files={"files": ("big.png", png(100, 100))})  # 10,000 px > 5,000
        assert huge.status_code == 422 and "pixel" in huge.json()["results"][0]["error"].lower()

        long_id = c.post(
            "/v1/score", files={"files": ("a.png", png())}, data={"listing_id": "x" * 300}
        )
        assert long_id.status_code == 422 and long_id.json()["error"]["code"] == "invalid_field"

        not_found = c.get("/v1/nothing")
        assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "not_found"
        wrong_method = c.get("/v1/score")
        assert wrong_method.status_code == 405 and "error" in wrong_method.json()
        assert c.get("/healthz").status_code == 200


def test_body_size_limit_declared_and_streamed(serve_fake):
    server, det = serve_fake(ServiceSettings(max_body_bytes=20_000))
    with server.client() as c:
        big = c.post("/v1/score", files={"files": ("big.bmp", b"\0" * 30_000)})
        assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"

        # Chunked upload without Content-Length: caught while streaming.
        boundary = "xyzboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="s.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

        def chunks() -> Iterator[bytes]:
            yield head
            for _ in range(10):
                yield b"\1" * 4_000
            yield f"\r\n--{boundary}--\r\n".encode()

        streamed = c.post(
            "/v1/score",
            content=chunks(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "body_too_large"
        assert c.post("/v1/score", files={"files": ("ok.png", png(44, 10))}).status_code == 200
    assert det.batches == [1]


def test_score_token_enforced(serve_fake):
    server, _ = serve_fake(ServiceSettings(score_token=SCORER))
    with server.client() as c:
        files = {"files": ("a.png", png())}
        none = c.post("/v1/score", files=files)
        assert none.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
        assert (
            c.post("/v1/score", files=files, headers={"Authorization": "Basic abc"}).status_code
            == 401
        )
        wrong = c.post("/v1/score", files=files, headers={"Authorization": f"Bearer {SCORER}x"})
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
        assert (
            c.post(
                "/v1/score", files=files, headers={"Authorization": f"Bearer {ADMIN}"}
            ).status_code
            == 403
        )
        ok = c.post("/v1/score", files=files, headers={"Authorization": f"Bearer {SCORER}"})
        assert ok.status_code == 200
        assert c.get("/healthz").status_code == 200  # ops endpoints stay open
        metrics = c.get("/metrics").text
    requests = "counterfeit_http_requests_total"
    assert metric(metrics, requests, method="POST", route="/v1/score", status="401") == 2
    assert metric(metrics, "counterfeit_http_errors_total", code="forbidden") == 2


def test_admin_disabled_without_token(serve_fake):
    server, det = serve_fake()
    with server.client() as c:
        for method, path in (
            ("POST", "/v1/reload"),
            ("DELETE", "/v1/references?brand=x"),
            ("POST", "/v1/references"),
        ):
            r = c.request(method, path, headers={"Authorization": "Bearer anything-at-all-here"})
            assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled", (
                path,
                r.text,
            )
    assert det.reloads == 0


def test_admin_token_enforced_on_reload(serve_fake):
    server, det = serve_fake(ServiceSettings(admin_token=ADMIN, score_token=SCORER))
    with server.client() as c:
        assert c.post("/v1/reload").status_code == 401
        assert (
            c.post("/v1/reload", headers={"Authorization": f"Bearer {SCORER}"}).status_code == 403
        )
        ok = c.post("/v1/reload", headers={"Authorization": f"Bearer {ADMIN}"})
        assert ok.status_code == 200 and ok.json() == {"reloaded": True, "generation": 2}
        bad_delete = c.delete(
            "/v1/references",
            params={"brand": "a", "product_id": "b"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert bad_delete.status_code == 422
    assert det.reloads == 1


def test_timeout_answers_504_and_server_recovers(serve_fake):
    det = FakeDetector(delay=1.5)
    server, _ = serve_fake(ServiceSettings(request_timeout_s=0.3), detector=det)
    with server.client() as c:
        slow = c.post("/v1/score", files={"files": ("a.png", png())})
        assert slow.status_code == 504 and slow.json()["error"]["code"] == "timeout"
        det.delay = 0.0
        time.sleep(1.5)  # the abandoned batch finishes in the background
        assert (
            c.post("/v1/score", files={"files": ("a.png", png(45, 9))}).json()["results"][0][
                "brand"
            ]
            == "w45"
        )


def test_model_failure_is_500_without_internals(serve_fake):
    server, _ = serve_fake(detector=FakeDetector(fail=True))
    with server.client() as c:
        r = c.post("/v1/score", files={"files": ("a.png", png())})
    assert r.status_code == 500 and r.json()["error"]["code"] == "scoring_failed"
    assert "secret" not in r.text and "Traceback" not in r.text


async def _concurrent_scores(url: str, widths: Sequence[int]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/score",
                    files={"files": (f"{w}.png", png(w, 8))},
                    data={"listing_id": str(w)},
                )
                for w in widths
            )
        )


def test_concurrent_requests_are_batched_and_get_their_own_results(serve_fake):
    det = FakeDetector(delay=0.05)
    server, _ = serve_fake(ServiceSettings(max_wait_ms=50, max_batch_images=32), detector=det)
    widths = list(range(20, 44))
    responses = asyncio.run(_concurrent_scores(server.url, widths))
    for w, r in zip(widths, responses):
        assert r.status_code == 200
        assert r.json()["listing_id"] == str(w) and r.json()["results"][0]["brand"] == f"w{w}"
    assert sum(det.batches) == len(widths)
    assert max(det.batches) > 1 and len(det.batches) < len(widths)


def test_batching_can_be_disabled(serve_fake):
    det = FakeDetector()
    server, _ = serve_fake(ServiceSettings(max_batch_images=1), detector=det)
    responses = asyncio.run(_concurrent_scores(server.url, list(range(20, 28))))
    assert all(r.status_code == 200 for r in responses)
    assert det.batches == [1] * 8


def test_info_metrics_and_openapi(serve_fake):
    server, _ = serve_fake(ServiceSettings(admin_token=ADMIN))
    with server.client() as c:
        c.post("/v1/score", files=[("files", ("a.png", png(33, 9))), ("files", ("b.png", b"junk"))])
        c.post("/v1/score", files={"files": ("c.png", png(33, 9))})
        info = c.get("/v1/info").json()
        metrics = c.get("/metrics")
        spec = c.get("/openapi.json").json()
    assert info["model"]["arch"] == "fake:arch" and info["thresholds"]["version"] == "test-v1"
    assert (
        info["index"]["count"] == 3
        and "path" not in info["index"]
        and info["admin_enabled"] is True
    )
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = metrics.text
    requests = "counterfeit_http_requests_total"
    assert metric(text, requests, method="POST", route="/v1/score", status="200") == 2
    assert metric(text, "counterfeit_flags_total", brand="w33") == 2
    assert metric(text, "counterfeit_images_total", outcome="error") == 1
    assert metric(text, "counterfeit_http_request_duration_seconds_count", route="/v1/score") == 2
    assert "counterfeit_model_batch_images_bucket" in text
    assert metric(text, "counterfeit_ready") == 1
    assert {"/v1/score", "/v1/references", "/v1/reload", "/v1/info", "/healthz", "/readyz"} <= set(
        spec["paths"]
    )
    score_form = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert score_form["schema"]["$ref"]


def test_metrics_parse_and_count_scoring_requests(serve_fake):
    """/metrics is valid Prometheus text whose request counter goes up with each scoring call."""
    server, _ = serve_fake()
    labels = {"method": "POST", "route": "/v1/score", "status": "200"}
    with server.client() as c:
        before = c.get("/metrics").text
        assert c.post("/v1/score", files={"files": ("a.png", png())}).status_code == 200
        after = c.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(after)}
    assert families["counterfeit_http_requests"].type == "counter"
    assert families["counterfeit_http_request_duration_seconds"].type == "histogram"
    assert metric(before, "counterfeit_http_requests_total", **labels) is None
    assert metric(after, "counterfeit_http_requests_total", **labels) == 1


# ---------------------------------------------------------------------- real pipeline (tiny preset)
BRAND_SHAPES = {
    "acme": ("ellipse", (220, 30, 30)),
    "globex": ("rect", (30, 160, 40)),
    "initech": ("triangle", (30, 60, 220)),
    "umbrella": ("cross", (230, 180, 20)),
}


def logo(brand: str, size: int = 96) -> bytes:
    shape, color = BRAND_SHAPES[brand]
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    s = size / 96
    if shape == "ellipse":
        d.ellipse((10 * s, 10 * s, 86 * s, 86 * s), fill=color)
    elif shape == "rect":
        d.rectangle((15 * s, 25 * s, 80 * s, 70 * s), fill=color)
    elif shape == "triangle":
        d.polygon([(48 * s, 8 * s), (88 * s, 88 * s), (8 * s, 88 * s)], fill=color)
    else:
        d.rectangle((40 * s, 8 * s, 56 * s, 88 * s), fill=color)
        d.rectangle((8 * s, 40 * s, 88 * s, 56 * s), fill=color)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from detector.indexing import run_indexing

    root = tmp_path_factory.mktemp("svc")
    for brand in ("acme", "globex", "initech"):
        (root / "refs" / brand).mkdir(parents=True)
        (root / "refs" / brand / "logo.png").write_bytes(logo(brand))
    report = run_indexing(root / "refs", root / "index", preset="tiny-clip-test")
    assert report.added == 3 and not report.failed
    return root / "index"


@pytest.fixture()
def real_server(tiny_index: Path, tmp_path: Path) -> Iterator[tuple[LiveServer, Path]]:
    import shutil

    from detector.scoring import Detector

    index_dir = tmp_path / "index"
    shutil.copytree(tiny_index, index_dir)  # each test may write its own copy
    app = create_app(
        lambda: Detector.open(index_dir, device="cpu"),
        ServiceSettings(admin_token=ADMIN, request_timeout_s=60),
    )
    with LiveServer(app) as server:
        server.wait_ready()
        yield server, index_dir


def _auth(token: str = ADMIN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_real_scoring_matches_the_python_api(real_server):
    from detector.scoring import Detector

    server, index_dir = real_server
    brands = ["acme", "globex", "initech"]
    with server.client() as c:
        r = c.post(
            "/v1/score",
            files=[("files", (f"{b}.png", logo(b, 128))) for b in brands],
            data={"listing_id": "L1"},
        )
        info = c.get("/v1/info").json()
    assert r.status_code == 200, r.text
    http = r.json()["results"]
    with Detector.open(index_dir, device="cpu") as det:
        direct = det.score_many([logo(b, 128) for b in brands], [f"{b}.png" for b in brands])
    for got, want in zip(http, direct):
        assert got["brand"] == want.brand and got["flagged"] == want.flagged
        assert got["score"] == pytest.approx(want.score, abs=1e-4)
        assert [m["ref_id"] for m in got["matches"]] == [m.ref_id for m in want.matches]
    assert info["index"]["count"] == 3 and info["model"]["preset"] == "tiny-clip-test"
    assert info["index"]["per_brand"].keys() == set(brands)


async def _score_until(
    url: str, stop: asyncio.Event, results: list[int], brands: Sequence[str]
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        i = 0
        while not stop.is_set():
            b = brands[i % len(brands)]
            r = await client.post("/v1/score", files={"files": (f"{b}.png", logo(b, 80))})
            results.append(r.status_code)
            i += 1


def test_real_admin_writes_during_load_lose_no_request(real_server):
    server, _ = real_server

    async def scenario() -> tuple[list[int], list[dict[str, Any]]]:
        stop = asyncio.Event()
        statuses: list[int] = []
        load = [
            asyncio.create_task(
                _score_until(server.url, stop, statuses, ["acme", "globex", "initech"])
            )
            for _ in range(3)
        ]
        steps: list[dict[str, Any]] = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=_auth()) as admin:
            await asyncio.sleep(0.3)
            added = await admin.post(
                "/v1/references",
                data={"brand": "umbrella", "kind": "logo"},
                files=[("files", ("cross.png", logo("umbrella"))), ("files", ("junk.png", b"xx"))],
            )
            steps.append({"status": added.status_code, **added.json()})
            info = (await admin.get("/v1/info")).json()
            steps.append({"count": info["index"]["count"]})
            hit = await admin.post("/v1/score", files={"files": ("q.png", logo("umbrella", 120))})
            steps.append(hit.json()["results"][0])
            removed = await admin.delete("/v1/references", params={"brand": "umbrella"})
            steps.append({"status": removed.status_code, **removed.json()})
            for _ in range(3):
                reload = await admin.post("/v1/reload")
                steps.append({"status": reload.status_code, **reload.json()})
            info = (await admin.get("/v1/info")).json()
            steps.append({"count": info["index"]["count"]})
        stop.set()
        await asyncio.gather(*load)
        return statuses, steps

    statuses, steps = asyncio.run(scenario())
    added, count_after_add, hit, removed, *reloads, count_after_remove = steps
    assert added["status"] == 200 and added["added"] == 1
    assert [f["item"] for f in added["failed"]] == ["junk.png"]  # client's name, not a temp path
    assert count_after_add == {"count": 4}
    assert hit["brand"] == "umbrella"
    assert removed["status"] == 200 and removed["removed"] == 1
    assert all(r["status"] == 200 and r["reloaded"] is False for r in reloads)  # already current
    assert count_after_remove == {"count": 3}
    assert len(statuses) >= 6 and set(statuses) == {200}


def test_real_reload_picks_up_an_external_writer(real_server, tmp_path):
    from detector.indexing import run_indexing

    server, index_dir = real_server
    (tmp_path / "more" / "umbrella").mkdir(parents=True)
    (tmp_path / "more" / "umbrella" / "logo.png").write_bytes(logo("umbrella"))
    with server.client(headers=_auth()) as c:
        before = c.get("/v1/info").json()["index"]
        report = run_indexing(tmp_path / "more", index_dir, create=False)  # another process' write
        assert report.added == 1
        # Not visible until reloaded: the service keeps answering from the loaded generation.
        assert (
            c.post("/v1/score", files={"files": ("q.png", logo("umbrella"))}).json()["results"][0][
                "brand"
            ]
            != "umbrella"
        )
        r = c.post("/v1/reload")
        assert r.status_code == 200 and r.json()["reloaded"] is True
        assert r.json()["generation"] > before["generation"]
        assert (
            c.post("/v1/score", files={"files": ("q.png", logo("umbrella"))}).json()["results"][0][
                "brand"
            ]
            == "umbrella"
        )
        metrics = c.get("/metrics").text
    assert metric(metrics, "counterfeit_index_reloads_total", result="changed") == 1
    assert metric(metrics, "counterfeit_index_references") == 4


def test_match_model_carries_every_scored_match_field():
    """The HTTP schema mirrors ScoredMatch by hand; a field added to one must reach the other."""
    from dataclasses import fields

    from detector.service.app import MatchModel
    from detector.verdict import ScoredMatch

    assert set(MatchModel.model_fields) == {f.name for f in fields(ScoredMatch)}
