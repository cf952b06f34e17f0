"""How long ``mvs synth`` takes for one default scene (49 views of 640x512).

Generates one scene into a temporary folder, prints the time per stage and in total, and
writes ``benchmarks/results/synth_speed.json`` with a description of the machine. The
target is under 30 s on 2 cores. Besides wall time it records the CPU time of this
process and of its render workers, and the load average: on a shared machine the wall
time is only meaningful together with them.

    .venv/bin/python benchmarks/synth_speed.py [--seed 0] [--views 49] [--width 640] [--height 512]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "synth_speed.json"
TARGET_S = 30.0


def machine() -> dict:
    import numpy
    import torch

    from mvs._open3d import open3d

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "open3d": open3d().__version__,
        "numpy": numpy.__version__,
    }


def busy_cores(seconds: float = 2.0) -> float | None:
    """How many cores other work keeps busy right now (from /proc/stat over ``seconds``)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy0, total0 = sample()
        time.sleep(seconds)
        busy1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round((busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1), 2)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--views", type=int, default=49)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    from mvs.data.synthetic import SynthConfig, generate_scene

    config = SynthConfig(views=args.views, width=args.width, height=args.height)
    before = machine()
    before["busy_cores_before_start"] = busy_cores()
    with tempfile.TemporaryDirectory(prefix="synth-speed-") as tmp:
        stages: dict[str, float] = {}
        own0, children0 = cpu_seconds()
        start = time.perf_counter()
        scene = generate_scene(Path(tmp) / "scene", config, seed=args.seed, timings=stages)
        total = time.perf_counter() - start
        own1, children1 = cpu_seconds()
        sizes = {p.name: p.stat().st_size for p in scene.iterdir() if p.is_file()}
        folder_bytes = sum(p.stat().st_size for p in scene.rglob("*") if p.is_file())
        meta = json.loads((scene / "scene.json").read_text())

    result = {
        "benchmark": "mvs synth: one scene, test layout",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "config": asdict(config),
        "seed": args.seed,
        "seconds": {
            "total_wall": round(total, 2),
            "cpu_main_process": round(own1 - own0, 2),
            "cpu_render_workers": round(children1 - children0, 2),
            "cpu_total": round(own1 - own0 + children1 - children0, 2),
            "stages_wall": {k: round(v, 2) for k, v in stages.items()},
        },
        "target_s": TARGET_S,
        "under_target": total < TARGET_S,
        "scene": {
            "objects": [o["kind"] for o in meta["objects"]],
            "hard_cases": meta["hard_cases"],
            "gt_points": meta["gt_points"],
            "gt_points_ply_mb": round(sizes.get("gt_points.ply", 0) / 1e6, 1),
            "scene_folder_mb": round(folder_bytes / 1e6, 1),
        },
    }
    print(f"mvs synth: {args.views} views {args.width}x{args.height}, seed {args.seed}")
    for stage, seconds in stages.items():
        print(f"  {stage:<20s} {seconds:7.2f} s")
    print(f"  {'total':<20s} {total:7.2f} s   (target < {TARGET_S:.0f} s)")
    print(f"  cpu: main {own1 - own0:.1f} s, render workers {children1 - children0:.1f} s; "
          f"other work kept {before['busy_cores_before_start']} cores busy at the start; "
          f"load average before {before['load_average_1_5_15']}, after {result['load_average_after']}")
    print(f"  gt_points: {meta['gt_points']} ({result['scene']['gt_points_ply_mb']} MB), "
          f"scene folder {result['scene']['scene_folder_mb']} MB")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
