"""Speed, memory and size of the cascade network (random weights).

Times one forward pass (no grad, ``torch.inference_mode``) with 5 views at 640x512 and
1600x1152 after a warm-up, reports the best and median of the repeats, the peak RSS of
the process, the parameter count and the size of the saved state_dict, and writes
``benchmarks/results/model_speed.json`` with the machine's details.

Random weights give noisy depth maps, so the later stages' hypotheses (and the source
pixels they sample) jump around between neighbouring pixels: feature sampling is less
cache-friendly than with a trained model on smooth scenes, and the figures err on the slow
side.

Each size runs in a fresh subprocess so its peak RSS is its own. Timings on a shared
machine are only as good as the machine is idle: the report includes the CPU time other
processes used during each run (from /proc/stat), so a contended run can be recognised.

    .venv/bin/python benchmarks/model_speed.py [--repeats 3] [--sizes 640x512 1600x1152]
        [--hypotheses 48 32 8] [--device cuda] [--fp32] [--output PATH]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "model_speed.json"
NUM_VIEWS = 5


def system_cpu_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores), or None off Linux."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def make_inputs(width: int, height: int, views: int = NUM_VIEWS, seed: int = 0):
    """Random images and a plausible DTU-like rig (mm units): cameras on a horizontal arc."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(1, views, 3, height, width, generator=generator)
    focal = 2890.0 * width / 1600.0
    K = torch.tensor(
        [[focal, 0.0, width / 2 - 0.5], [0.0, focal, height / 2 - 0.5], [0.0, 0.0, 1.0]]
    )
    intrinsics = K.expand(1, views, 3, 3).clone()
    extrinsics = torch.eye(4).repeat(1, views, 1, 1)
    for v in range(1, views):  # sources 50, 100, ... mm either side (~5 degrees at 600 mm)
        extrinsics[0, v, 0, 3] = 50.0 * ((v + 1) // 2) * (1 if v % 2 else -1)
    return images, intrinsics, extrinsics, torch.tensor([425.0]), torch.tensor([935.0])


def measure(
    width: int,
    height: int,
    repeats: int,
    device: str = "cpu",
    hypotheses: tuple | None = None,
    mixed_precision: bool = True,
) -> dict:
    """Run in a fresh process: time the forward pass at one size.

    On CUDA the pass runs under ``torch.autocast(dtype=torch.float16)`` unless
    ``mixed_precision`` is False (float32, as ``mvs reconstruct --fp32``); on the CPU it
    always runs in float32.
    """
    import contextlib

    import torch

    from mvs.models import CascadeMVSNet, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig() if hypotheses is None else ModelConfig(hypotheses=hypotheses)
    model = CascadeMVSNet(config).eval().to(device)
    inputs = [t.to(device) for t in make_inputs(width, height)]
    cuda = device.startswith("cuda")
    float16 = cuda and mixed_precision
    autocast = torch.autocast("cuda", dtype=torch.float16) if float16 else contextlib.nullcontext()
    times, other_cpu = [], []
    with torch.inference_mode(), autocast:
        model(*inputs)  # warm-up (allocator, oneDNN primitive cache / cuDNN autotune)
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            system_before, own_before = system_cpu_seconds(), time.process_time()
            start = time.perf_counter()
            output = model(*inputs)
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            own = time.process_time() - own_before
            times.append(elapsed)
            if system_before is not None:
                other_cpu.append(max(0.0, system_cpu_seconds() - system_before - own))
    depth = output["depth"]
    assert depth.shape == (1, height, width) and torch.isfinite(depth).all()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "width": width,
        "height": height,
        "views": NUM_VIEWS,
        "seconds_best": round(min(times), 3),
        "seconds_median": round(statistics.median(times), 3),
        "seconds_all": [round(t, 3) for t in times],
        "other_processes_cpu_seconds": [round(c, 2) for c in other_cpu],
        "peak_rss_gib": round(peak_kib / 2**20, 3),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if cuda
        else None,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "precision": "float16-autocast" if float16 else "float32",
        "torch_threads": torch.get_num_threads(),
    }


def model_size(hypotheses: tuple | None = None) -> dict:
    import torch

    from mvs.models import CascadeMVSNet, ModelConfig

    config = ModelConfig() if hypotheses is None else ModelConfig(hypotheses=hypotheses)
    model = CascadeMVSNet(config)
    buffer = io.BytesIO()
    torch.save({"config": config.to_dict(), "state_dict": model.state_dict()}, buffer)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "checkpoint_bytes": buffer.getbuffer().nbytes,
        "config": config.to_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["640x512", "1600x1152"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (autocast float16 unless --fp32)")
    parser.add_argument("--fp32", action="store_true", help="on CUDA, run in float32 instead of float16 mixed precision")
    parser.add_argument(
        "--hypotheses", type=int, nargs="+", help="override ModelConfig.hypotheses (e.g. 48 32 8)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--_child", nargs=3, metavar=("W", "H", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._child:  # one size, in its own process
        width, height, repeats = (int(v) for v in args._child)
        hypotheses = tuple(args.hypotheses) if args.hypotheses else None
        print(json.dumps(measure(width, height, repeats, args.device, hypotheses, mixed_precision=not args.fp32)))
        return 0

    import torch

    runs = []
    for size in args.sizes:
        width, height = (int(v) for v in size.lower().split("x"))
        child = subprocess.run(
            [sys.executable, __file__, "--device", args.device]
            + (["--hypotheses", *map(str, args.hypotheses)] if args.hypotheses else [])
            + (["--fp32"] if args.fp32 else [])
            + ["--_child", str(width), str(height), str(args.repeats)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
        )
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return child.returncode
        run = json.loads(child.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"{width}x{height}, {NUM_VIEWS} views: best {run['seconds_best']:.2f} s, "
            f"median {run['seconds_median']:.2f} s, peak RSS {run['peak_rss_gib']:.2f} GiB "
            f"(other processes used {run['other_processes_cpu_seconds']} CPU-s during the runs)"
        )
    size = model_size(tuple(args.hypotheses) if args.hypotheses else None)
    print(
        f"parameters: {size['parameters']:,}; checkpoint: {size['checkpoint_bytes'] / 2**20:.2f} MiB"
    )
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu_model": cpu_model(),
            "logical_cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": runs[0]["device"] if runs else args.device,
        },
        "runs": runs,
        **size,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
