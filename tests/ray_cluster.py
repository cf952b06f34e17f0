"""A private local Ray head for tests: started with ``ray start --head``, stopped by its own
process group (never ``ray stop``, which would kill every Ray process on the machine).

Token authentication is switched off for this head and its clients (``RAY_AUTH_MODE``),
so the tests do not depend on what earlier runs left in ``~/.ray``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AUTH_ENV = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRayHead:
    """``ray start --head --block`` in its own session, on 127.0.0.1 and free ports."""

    def __init__(self, num_cpus: int = 2, start_timeout: float = 90.0):
        self.num_cpus = num_cpus
        self.start_timeout = start_timeout
        self.port = free_port()
        self.dashboard_port = free_port()
        # Short path: Ray's Unix socket paths must stay under ~107 characters.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rmvs_", dir="/tmp"))
        self.log_path = self.temp_dir / "head.log"
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def environment(self) -> dict[str, str]:
        """The head's environment, inherited by every process it starts.

        ``RAY_ADDRESS`` matters when other Ray instances run on this machine: Ray's state
        API (which Ray Train's placement-group cleaner uses) otherwise refuses to guess
        which instance it belongs to.
        """
        bin_dir = str(Path(sys.executable).parent)
        return {**os.environ, **AUTH_ENV, "RAY_ADDRESS": self.address,
                "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}

    def start(self) -> LocalRayHead:
        ray_cli = Path(sys.executable).parent / "ray"
        command = [
            str(ray_cli), "start", "--head", "--block", f"--port={self.port}",
            "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
            f"--num-cpus={self.num_cpus}", f"--temp-dir={self.temp_dir}",
            "--include-dashboard=true", "--disable-usage-stats",
        ]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(command, env=self.environment(), start_new_session=True,
                                            stdout=log, stderr=subprocess.STDOUT, cwd=self.temp_dir)
        self._wait_for_job_server()
        return self

    def _wait_for_job_server(self) -> None:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                JobSubmissionClient(self.dashboard_url).list_jobs()
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"Ray head not up after {self.start_timeout} s:\n{self.log_path.read_text()}") from None
                time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM the head's process group (graceful), then SIGKILL whatever is left of it."""
        if self.process is None:
            return
        group = self.process.pid
        # `ray start --block` itself outlives SIGTERM; its children (GCS, raylet, workers) do not.
        for sig, grace in ((signal.SIGTERM, 4.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(group):
                time.sleep(0.2)
            if not _group_alive(group):
                break
        self.process.wait(timeout=5)
        self.process = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> LocalRayHead:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
