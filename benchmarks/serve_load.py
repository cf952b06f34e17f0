"""Load on the HTTP reconstruction service: bounded concurrent clients on loopback.

First the same reconstruction runs in this process without Ray or HTTP (the engine the
model replicas run, with the replicas' torch thread count): the baseline. Then a local Ray
instance and the Serve application start (fixed replica count, no autoscaling, so the
figures do not depend on when the autoscaler reacts), and for each concurrency level
``c`` exactly ``c`` clients keep one ``POST /v1/reconstruct`` each in flight until the
level's requests are done. Reported per level: p50/p95/mean latency, throughput, errors
(must be 0), and where the time went on the server (validation, queueing for a replica,
reconstruction). The Serve overhead is the single-client latency minus the in-process
time. A few requests also go through the job API (submit, poll, download) at one client.

    .venv/bin/python benchmarks/serve_load.py [--concurrency 1 4 16] [--size 160x128] [--views 5]
        [--replicas 2] [--replica-cpus 1] [--requests-per-client 2]

Writes benchmarks/results/serve_load.json and serve_load.png.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import RESULTS, write_result  # noqa: E402
from mvs.checkpoint import load_model  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED  # noqa: E402
from mvs_serving.config import ServiceConfig  # noqa: E402
from mvs_serving.engine import reconstruct_payload  # noqa: E402
from mvs_serving.options import parse_options  # noqa: E402
from mvs_serving.uploads import UploadedFile, prepare_scene  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def scene_parts(scene: Path) -> list[tuple[str, tuple[str, bytes]]]:
    """The scene as multipart files, read once (clients send the same bytes every time)."""
    parts = [("images", (p.name, p.read_bytes())) for p in sorted((scene / "images").iterdir())]
    parts += [("cams", (p.name, p.read_bytes())) for p in sorted((scene / "cams").iterdir())]
    parts.append(("pair", ("pair.txt", (scene / "pair.txt").read_bytes())))
    return parts


def direct_baseline(scene: Path, form: dict[str, str], threads: int, repeats: int) -> dict:
    """The same work in this process: validation + engine, and engine alone."""
    torch.set_num_threads(threads)
    config = ServiceConfig(default_max_dim=int(form["max_dim"]))
    options = parse_options(list(form.items()), config)
    model, _ = load_model(None, "cpu")
    validate, engine, points = [], [], None
    for i in range(repeats + 1):
        files = [UploadedFile(field, name, io.BytesIO(data)) for field, (name, data) in scene_parts(scene)]
        tick = time.perf_counter()
        prepared = prepare_scene(files, options, config, max_views=64)
        middle = time.perf_counter()
        meta, _ = reconstruct_payload(model, prepared.payload, options, "cpu")
        done = time.perf_counter()
        if i > 0:  # the first run pays for allocations and kernel selection
            validate.append(middle - tick)
            engine.append(done - middle)
        points = meta["points"]
    return {
        "torch_threads": threads,
        "repeats": repeats,
        "validate_s_median": statistics.median(validate),
        "engine_s_median": statistics.median(engine),
        "engine_s_all": engine,
        "points": points,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_level(url: str, parts, form: dict[str, str], concurrency: int, total: int) -> dict:
    """``concurrency`` clients, each with one request in flight, until ``total`` are done."""
    remaining = [total]
    lock = threading.Lock()
    records: list[dict] = []

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                if remaining[0] == 0:
                    return
                remaining[0] -= 1
            tick = time.perf_counter()
            record: dict = {}
            try:
                response = session.post(f"{url}/v1/reconstruct", files=parts, data=form, timeout=900)
                record["status"] = response.status_code
                if response.status_code == 200:
                    record["timings"] = json.loads(response.headers["X-MVS-Timings"])
                    record["points"] = int(response.headers["X-MVS-Points"])
                else:
                    record["error"] = response.text[:300]
            except requests.RequestException as error:
                record["status"] = None
                record["error"] = repr(error)[:300]
            record["latency_s"] = time.perf_counter() - tick
            with lock:
                records.append(record)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(client) for _ in range(concurrency)]:
            future.result()
    wall = time.perf_counter() - start
    ok = [r for r in records if r["status"] == 200]
    latencies = [r["latency_s"] for r in ok]

    def server(key: str) -> float:
        return statistics.median([r["timings"].get(key, 0.0) for r in ok]) if ok else float("nan")

    return {
        "concurrency": concurrency,
        "requests": len(records),
        "errors": len(records) - len(ok),
        "error_samples": [r.get("error") for r in records if r["status"] != 200][:3],
        "wall_s": wall,
        "throughput_rps": len(ok) / wall,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_mean_s": statistics.mean(latencies) if latencies else float("nan"),
        "server_median_s": {k: server(k) for k in ("validate_s", "queue_s", "reconstruct_s", "total_s")},
        # What the request cost beyond the replica's own reconstruction: HTTP, validation,
        # queueing, handle call, event/PLY streaming.
        "outside_reconstruction_p50_s": percentile([r["latency_s"] - r["timings"]["reconstruct_s"] for r in ok], 50),
        "points": sorted({r["points"] for r in ok}),
    }


def run_jobs(url: str, parts, form: dict[str, str], count: int, poll_s: float) -> dict:
    """Submit, poll and download ``count`` jobs one after the other."""
    session = requests.Session()
    latencies, errors = [], 0
    for _ in range(count):
        tick = time.perf_counter()
        response = session.post(f"{url}/v1/jobs", files=parts, data=form, timeout=60)
        if response.status_code != 202:
            errors += 1
            continue
        job = response.json()
        while job["status"] not in ("done", "failed"):
            time.sleep(poll_s)
            job = session.get(f"{url}/v1/jobs/{job['id']}", timeout=30).json()
        result = session.get(f"{url}/v1/jobs/{job['id']}/result", timeout=60)
        if job["status"] != "done" or result.status_code != 200:
            errors += 1
            continue
        latencies.append(time.perf_counter() - tick)
        session.delete(f"{url}/v1/jobs/{job['id']}", timeout=30)
    return {"requests": count, "errors": errors, "poll_s": poll_s, "latency_p50_s": percentile(latencies, 50),
            "latencies_s": latencies}


def plot(levels: list[dict], baseline_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [lv["concurrency"] for lv in levels]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(conc, [lv["latency_p50_s"] for lv in levels], "o-", label="p50")
    left.plot(conc, [lv["latency_p95_s"] for lv in levels], "s--", label="p95")
    left.axhline(baseline_s, color="grey", linestyle=":", label="in-process (no Serve)")
    left.set_ylim(bottom=0)
    left.set_xscale("log", base=2)
    left.set_xlabel("concurrent clients")
    left.set_ylabel("latency (s)")
    left.legend()
    right.plot(conc, [lv["throughput_rps"] for lv in levels], "o-")
    right.axhline(1 / baseline_s, color="grey", linestyle=":", label="in-process, sequential")
    right.set_ylim(bottom=0)
    right.set_xscale("log", base=2)
    right.set_xlabel("concurrent clients")
    right.set_ylabel("scenes / s")
    right.legend()
    fig.suptitle("POST /v1/reconstruct on loopback")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--min-requests", type=int, default=6, help="at least this many requests per level")
    parser.add_argument("--size", default="160x128")
    parser.add_argument("--views", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--replica-cpus", type=float, default=1.0, help="num_cpus (and torch threads) per replica")
    parser.add_argument("--baseline-repeats", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=3, help="requests through the job API (0: skip)")
    parser.add_argument("--name", default="serve_load")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    threads = max(1, int(args.replica_cpus))
    form = {"max_dim": str(max(width, height)), "min_consistent_views": "2"}
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="serve_load_") as tmp:
        scene = Path(tmp) / "scene"
        generate_scene(scene, SynthConfig(views=args.views, width=width, height=height, lights=1, test_light=0,
                                          gt_spacing=2.0), HELD_OUT_SEED + 11)
        parts = scene_parts(scene)
        upload_bytes = sum(len(data) for _, (_, data) in parts)
        print(f"scene: {args.views} views at {width}x{height}, {upload_bytes / 1024:.0f} KiB per upload")

        print(f"in-process baseline ({threads} torch thread(s), {args.baseline_repeats} runs after a warm-up)")
        baseline = direct_baseline(scene, form, threads, args.baseline_repeats)
        print(f"  validate {baseline['validate_s_median']:.3f} s, reconstruct {baseline['engine_s_median']:.3f} s, "
              f"{baseline['points']} points")

        import ray
        from ray import serve

        from mvs_serving.launch import ServeFile, deploy, wait_until_healthy

        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray_tmp = tempfile.mkdtemp(prefix="rbench_", dir="/tmp")
        ray.init(address="local", num_cpus=int(np.ceil(args.replicas * args.replica_cpus + 1)),
                 object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
        serve_file = ServeFile(
            args={"default_max_dim": max(width, height), "sync_max_views": max(args.views, 2),
                  "max_views": max(args.views, 2), "tmp_dir": str(Path(tmp) / "serve")},
            deployments={
                "ReconstructionAPI": {"num_replicas": 1, "max_ongoing_requests": 64,
                                      "ray_actor_options": {"num_cpus": 0.25}},
                "Reconstructor": {"num_replicas": args.replicas, "max_ongoing_requests": 1,
                                  "ray_actor_options": {"num_cpus": args.replica_cpus}},
            },
            port=free_port(),
        )
        try:
            tick = time.perf_counter()
            url = deploy(serve_file)
            wait_until_healthy(url, 300)
            startup = time.perf_counter() - tick
            print(f"service up in {startup:.1f} s at {url}")
            # Warm every replica (first forward pays for allocations), as the baseline did.
            run_level(url, parts, form, args.replicas, 2 * args.replicas)
            levels = []
            for concurrency in args.concurrency:
                total = max(args.min_requests, concurrency * args.requests_per_client)
                level = run_level(url, parts, form, concurrency, total)
                levels.append(level)
                print(f"  c={concurrency:>3}: {level['requests']} requests, {level['errors']} errors, "
                      f"p50 {level['latency_p50_s']:.2f} s, p95 {level['latency_p95_s']:.2f} s, "
                      f"{level['throughput_rps']:.2f} scenes/s; server median {level['server_median_s']}")
            jobs = run_jobs(url, parts, form, args.jobs, 0.2) if args.jobs else None
            if jobs:
                print(f"  jobs (1 client, poll 0.2 s): p50 {jobs['latency_p50_s']:.2f} s, {jobs['errors']} errors")
        finally:
            serve.shutdown()
            ray.shutdown()
            import shutil

            shutil.rmtree(ray_tmp, ignore_errors=True)

    single = next((lv for lv in levels if lv["concurrency"] == 1), levels[0])
    overhead = single["latency_p50_s"] - baseline["engine_s_median"]
    load_after = os.getloadavg()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    shared = max(load_before[0], load_after[0]) > 0.5 * cores
    result = {
        "scene": {"views": args.views, "size": [width, height], "upload_kib": round(upload_bytes / 1024, 1)},
        "service": {"replicas": args.replicas, "replica_cpus": args.replica_cpus, "ingress_replicas": 1,
                    "startup_s": startup, "form": form},
        "baseline_in_process": baseline,
        "levels": levels,
        "jobs_api": jobs,
        "total_errors": sum(lv["errors"] for lv in levels) + (jobs["errors"] if jobs else 0),
        "serve_overhead": {
            "single_client_p50_s": single["latency_p50_s"],
            "in_process_engine_s": baseline["engine_s_median"],
            "overhead_s": overhead,
            "overhead_fraction": overhead / baseline["engine_s_median"],
            "outside_replica_reconstruction_p50_s": single["outside_reconstruction_p50_s"],
            "replica_reconstruct_p50_s": single["server_median_s"]["reconstruct_s"],
            "server_validate_s": single["server_median_s"]["validate_s"],
            "server_queue_s": single["server_median_s"]["queue_s"],
            "note": "overhead_s = single-client p50 latency - in-process reconstruction. "
                    "outside_replica_reconstruction_p50_s = latency - the replica's own reconstruction time "
                    "(HTTP upload/response, validation in the ingress, queueing, handle call, streaming of "
                    "events and PLY between processes); the rest of overhead_s is the replica computing "
                    "slower than this process did (another process, shared cores)",
        },
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "shared_load": shared,
        "load_note": ("other work was using this machine's CPUs during the run (load average above half the "
                      "cores): absolute times are inflated and noisy") if shared else "machine otherwise idle",
    }
    write_result(args.name, result)
    plot(levels, baseline["engine_s_median"], RESULTS / f"{args.name}.png")
    print(f"Serve overhead at 1 client: {1000 * overhead:.0f} ms "
          f"({100 * result['serve_overhead']['overhead_fraction']:.1f}% of {baseline['engine_s_median']:.2f} s), "
          f"of which {1000 * single['outside_reconstruction_p50_s']:.0f} ms outside the replica's reconstruction; "
          f"errors: {result['total_errors']}")


if __name__ == "__main__":
    main()
