"""Plumbing shared by the ``ray job submit`` entry points. Ray lives here, never in ``mvs/``.

Paths. A job submitted with ``--working-dir .`` runs in a temporary copy of the project,
so a relative path would land inside that copy and vanish with it. Relative data and
output paths are therefore resolved against ``MVS_HOME`` (default ``~/mvs``); absolute
paths and URIs (``s3://``, ``gs://``) are used as given. On a multi-node cluster, point
data paths at storage every node sees (NFS) or let each node generate synthetic data.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def mvs_home() -> Path:
    """Where relative job paths live: ``$MVS_HOME`` or ``~/mvs``."""
    return Path(os.environ.get("MVS_HOME", "~/mvs")).expanduser().resolve()


def is_uri(path: str) -> bool:
    return "://" in str(path)


def resolve_path(path: str | os.PathLike) -> str:
    """An absolute local path or a URI; relative paths are taken under :func:`mvs_home`."""
    text = str(path)
    if is_uri(text):
        return text
    expanded = Path(text).expanduser()
    return str(expanded if expanded.is_absolute() else mvs_home() / expanded)


@contextmanager
def node_lock(name: str | os.PathLike):
    """An exclusive lock shared by every process on this machine (an flock on ``name.lock``).

    Workers on one node must not generate the same synthetic data set at the same time.
    """
    lock_path = Path(str(name) + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def worker_runtime_env() -> dict:
    """The runtime environment that lets Ray workers import ``jobs`` and ``mvs``.

    A job submitted with ``--working-dir`` already ships the project to every worker;
    a driver started any other way uploads the two packages as ``py_modules``.
    """
    injected = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if injected and json.loads(injected).get("runtime_env", {}).get("working_dir"):
        return {}
    return {"py_modules": [str(REPO_ROOT / "jobs"), str(REPO_ROOT / "mvs")]}


def connect(address: str | None = None, quiet: bool = False):
    """Connect to the Ray cluster (``RAY_ADDRESS`` inside a submitted job), else start one."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=not quiet, runtime_env=worker_runtime_env() or None)
    return ray


def parse_bool_or_auto(value: str) -> bool | None:
    """``auto`` -> None, ``true/false/1/0/yes/no`` -> bool."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected auto, true or false, got {value!r}")


def join(base: str, *parts: str) -> str:
    """Join path parts, keeping a URI's ``scheme://`` intact (``Path`` would not)."""
    return "/".join([base.rstrip("/"), *parts])


def write_text(path: str, text: str) -> None:
    """Write a small text file to a local path or an ``s3://`` / ``gs://`` URI (pyarrow)."""
    import pyarrow.fs

    if is_uri(path):
        filesystem, inner = pyarrow.fs.FileSystem.from_uri(path)
    else:
        filesystem, inner = pyarrow.fs.LocalFileSystem(), str(Path(path).resolve())
    filesystem.create_dir(inner.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(inner) as stream:
        stream.write(text.encode())


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0
