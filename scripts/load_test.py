#!/usr/bin/env python
"""Bounded load test of the scoring service on loopback.

Starts the service itself (``python -m detector.service.server``) on a free loopback port, once
with micro-batching and once without (``--max-batch 1``), and sends single-image ``/v1/score``
requests at concurrency 1, 8 and 32. Each level stops after ``--requests`` requests or
``--max-seconds``, whichever comes first. Reports requests/s, p50/p95/p99 latency and errors as a
markdown table and writes JSON.

``--soak`` adds a writer: every ``--reload-every`` seconds it adds or removes a reference through
the admin API and reloads, while the load runs; any failed request counts as an error.

Without ``--index`` a small index is built in a temp dir from generated logos with ``--preset``.
``--url`` targets an already running service instead (127.0.0.1/localhost only; no
batching comparison then).

Example:
    .venv/bin/python scripts/load_test.py --preset tiny-clip-test --out load-tiny.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from PIL import Image, ImageDraw

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
BRAND_COLORS = [
    (220, 30, 30),
    (30, 160, 40),
    (30, 60, 220),
    (230, 180, 20),
    (140, 40, 160),
    (20, 170, 170),
]


# ---------------------------------------------------------------------- test data
def _logo(i: int, size: int = 128) -> Image.Image:
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    color = BRAND_COLORS[i % len(BRAND_COLORS)]
    m = size // 10
    shape = i % 3
    if shape == 0:
        d.ellipse((m, m, size - m, size - m), fill=color)
    elif shape == 1:
        d.rectangle((m, 2 * m, size - m, size - 2 * m), fill=color)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=color)
    d.text((2 * m, size // 2), f"B{i}", fill="black")
    return img


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def make_listings(n: int, seed: int = 0) -> list[bytes]:
    """Listing-like JPEGs (320x240): a brand logo pasted on a noisy background."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        bg = Image.effect_noise((320, 240), 40).convert("RGB")
        tile = _logo(rng.randrange(len(BRAND_COLORS)), size=rng.randint(60, 120))
        bg.paste(tile, (rng.randint(0, 320 - tile.width), rng.randint(0, 240 - tile.height)))
        buf = io.BytesIO()
        bg.save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def build_index(root: Path, preset: str, n_brands: int) -> Path:
    from detector.indexing import run_indexing

    refs = root / "refs"
    for i in range(n_brands):
        (refs / f"brand{i}").mkdir(parents=True, exist_ok=True)
        (refs / f"brand{i}" / "logo.png").write_bytes(_png(_logo(i)))
    report = run_indexing(refs, root / "index", preset=preset)
    if report.failed or report.added != n_brands:
        raise SystemExit(f"index build failed: {report.to_dict()}")
    return root / "index"


# ---------------------------------------------------------------------- server process
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    index: Path,
    *,
    max_batch: int,
    max_wait_ms: float,
    admin_token: str,
    device: str,
    extra_args: list[str],
    ready_timeout: float = 300,
) -> Iterator[str]:
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "detector.service.server",
        "--index",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(max_wait_ms),
        "--device",
        device,
        "--timeout",
        "120",
        "--log-level",
        "warning",
        *extra_args,
    ]
    env = {**os.environ, "COUNTERFEIT_ADMIN_TOKEN": admin_token}
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with code {proc.returncode}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not become ready in time")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------- load
def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run_level(
    url: str,
    listings: list[bytes],
    concurrency: int,
    n_requests: int,
    max_seconds: float,
    score_token: str | None,
) -> dict[str, Any]:
    """Send up to ``n_requests`` single-image requests with ``concurrency`` workers."""
    headers = {"Authorization": f"Bearer {score_token}"} if score_token else {}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n_requests))
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(
        base_url=url, timeout=120, limits=limits, headers=headers
    ) as client:

        async def worker() -> None:
            for i in counter:
                if time.monotonic() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post(
                        "/v1/score", files={"files": (f"l{i}.jpg", listings[i % len(listings)])}
                    )
                    ok = r.status_code == 200 and r.json()["results"][0]["error"] is None
                    key = "ok" if ok else f"http_{r.status_code}"
                except httpx.HTTPError as e:
                    key = type(e).__name__
                if key == "ok":
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    done = len(latencies) + sum(errors.values())
    return {
        "concurrency": concurrency,
        "requests": done,
        "seconds": round(elapsed, 3),
        "rps": round(done / elapsed, 2) if elapsed > 0 else 0.0,
        "p50_ms": round(_percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(_percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 99) * 1000, 1),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "truncated_by_time": done < n_requests,
    }


async def soak_writer(
    url: str, admin_token: str, every: float, stop: asyncio.Event
) -> dict[str, int]:
    """Alternately add and remove a reference (each followed by a reload) until ``stop``."""
    stats = {"writes": 0, "reloads": 0, "write_errors": 0}
    headers = {"Authorization": f"Bearer {admin_token}"}
    extra = _png(_logo(97, size=112))
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as admin:
        add = True
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
                break
            except TimeoutError:
                pass
            if add:
                r = await admin.post(
                    "/v1/references",
                    data={"brand": "soak-brand", "kind": "logo"},
                    files={"files": ("soak.png", extra)},
                )
            else:
                r = await admin.delete("/v1/references", params={"brand": "soak-brand"})
            stats["writes"] += 1
            stats["write_errors"] += r.status_code != 200
            r = await admin.post("/v1/reload")
            stats["reloads"] += 1
            stats["write_errors"] += r.status_code != 200
            add = not add
    return stats


async def measure(
    url: str, args: argparse.Namespace, listings: list[bytes], mode: str, admin_token: str | None
) -> list[dict[str, Any]]:
    await run_level(
        url, listings, 4, args.warmup, 60, args.score_token
    )  # warm caches, JIT, threads
    rows = []
    for concurrency in args.concurrency:
        stop = asyncio.Event()
        writer = None
        if args.soak and admin_token:
            writer = asyncio.create_task(soak_writer(url, admin_token, args.reload_every, stop))
        row = await run_level(
            url, listings, concurrency, args.requests, args.max_seconds, args.score_token
        )
        stop.set()
        if writer is not None:
            row.update(await writer)
        row["mode"] = mode
        rows.append(row)
        print(
            f"  {mode:12s} c={concurrency:<3d} {row['rps']:8.2f} req/s  p50 {row['p50_ms']:.1f} ms  "
            f"p99 {row['p99_ms']:.1f} ms  errors {row['errors']}",
            file=sys.stderr,
            flush=True,
        )
    return rows


def markdown(rows: list[dict[str, Any]], soak: bool) -> str:
    head = "| mode | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | errors |"
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|"
    if soak:
        head += " index writes+reloads |"
        sep += "---:|"
    lines = [head, sep]
    for r in rows:
        line = (
            f"| {r['mode']} | {r['concurrency']} | {r['requests']} | {r['rps']:.2f} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )
        if soak:
            line += (
                f" {r.get('writes', 0)}+{r.get('reloads', 0)} ({r.get('write_errors', 0)} failed) |"
            )
        lines.append(line)
    return "\n".join(lines)


def speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    by = {(r["mode"], r["concurrency"]): r["rps"] for r in rows}
    return {
        str(c): round(by[("batched", c)] / by[("unbatched", c)], 2)
        for (mode, c) in by
        if mode == "batched" and by.get(("unbatched", c))
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--index", type=Path, help="existing index (default: build a small one)")
    p.add_argument("--preset", default="tiny-clip-test", help="model preset for the built index")
    p.add_argument("--brands", type=int, default=6, help="brands in the built index")
    p.add_argument("--url", help="an already running service (127.0.0.1/localhost only)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--requests", type=int, default=200, help="requests per level")
    p.add_argument("--max-seconds", type=float, default=60.0, help="duration cap per level")
    p.add_argument("--warmup", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--max-batch", type=int, default=32, help="batch size of the batched run")
    p.add_argument("--no-compare", action="store_true", help="skip the unbatched run")
    p.add_argument(
        "--soak", action="store_true", help="add/remove a reference and reload during load"
    )
    p.add_argument("--reload-every", type=float, default=2.0, help="seconds between soak writes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-regions", action="store_true", help="server scores the whole frame only")
    p.add_argument("--no-verify", action="store_true", help="server skips geometric verification")
    p.add_argument("--score-token", default=os.environ.get("COUNTERFEIT_SCORE_TOKEN"))
    p.add_argument("--out", type=Path, default=Path("load-test.json"))
    args = p.parse_args()
    if args.requests < 1 or args.max_seconds <= 0 or min(args.concurrency) < 1:
        p.error("--requests, --max-seconds and --concurrency must be positive")
    listings = make_listings(32)

    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "requests_per_level": args.requests,
        "max_seconds_per_level": args.max_seconds,
        "max_wait_ms": args.max_wait_ms,
        "soak": args.soak,
        "cpus": os.cpu_count(),
        "device": args.device,
        "regions": not args.no_regions,
        "verify": not args.no_verify,
    }
    extra_args = (["--no-regions"] if args.no_regions else []) + (
        ["--no-verify"] if args.no_verify else []
    )
    if args.url:
        host = urlparse(args.url).hostname
        if host not in LOOPBACK_HOSTS:
            p.error(f"--url must point at 127.0.0.1/localhost, got {host!r}")
        admin = os.environ.get("COUNTERFEIT_ADMIN_TOKEN")
        rows = asyncio.run(measure(args.url.rstrip("/"), args, listings, "as-running", admin))
        meta["url"] = args.url
    else:
        with tempfile.TemporaryDirectory(prefix="counterfeit-load-") as tmp:
            index = args.index
            if index is None:
                print(
                    f"building a {args.brands}-brand index with {args.preset} ...", file=sys.stderr
                )
                index = build_index(Path(tmp), args.preset, args.brands)
            elif args.soak:
                import shutil

                shutil.copytree(index, Path(tmp) / "index")  # soak writes to a copy, never to yours
                index = Path(tmp) / "index"
            meta["preset"] = (
                json.loads((index / "manifest.json").read_text())
                .get("fingerprint", {})
                .get("preset")
            )
            admin = secrets.token_urlsafe(24)
            modes = [("batched", args.max_batch)] + ([] if args.no_compare else [("unbatched", 1)])
            for mode, max_batch in modes:
                with running_server(
                    index,
                    max_batch=max_batch,
                    max_wait_ms=args.max_wait_ms,
                    admin_token=admin,
                    device=args.device,
                    extra_args=extra_args,
                ) as url:
                    rows += asyncio.run(measure(url, args, listings, mode, admin))
    table = markdown(rows, args.soak)
    result = {
        "meta": meta,
        "rows": rows,
        "speedup_batched_over_unbatched": speedups(rows),
        "table": table,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    if result["speedup_batched_over_unbatched"]:
        print(
            "\nmicro-batching speed-up (req/s batched / unbatched): "
            + ", ".join(f"c={c}: {s}x" for c, s in result["speedup_batched_over_unbatched"].items())
        )
    print(f"\nJSON: {args.out}")
    total_errors = sum(r["errors"] + r.get("write_errors", 0) for r in rows)
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
