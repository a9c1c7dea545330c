"""Helpers for testing and benchmarking against a loopback S3 endpoint.

Used by the test suite and ``benchmarks/bench_download.py`` (the S3 server itself is moto,
a development dependency). Everything here binds to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_client(endpoint: str) -> Any:
    """A signed boto3 S3 client for the loopback server (moto takes any credentials)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@contextlib.contextmanager
def loopback_s3() -> Iterator[tuple[str, int]]:
    """A moto S3 server on 127.0.0.1 for the duration of the block; yields (endpoint, port)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.stop()


def archive_files(root: Path) -> dict[str, Path]:
    """Every file of a twin's raw root as bucket key -> path (the twin's own manifest is not
    part of the bucket)."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != "synthetic_manifest.json"
    }


def upload_public(client: Any, bucket: str, files: Mapping[str, Path], part_size: int) -> None:
    """Upload ``files`` (key -> local path) as ``public-read`` objects.

    Objects larger than ``part_size`` go up in parts of that size (multipart ETags).
    Anonymous (unsigned) HEAD requests are refused on objects that are not public-read.
    """
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
    for key, path in files.items():
        client.upload_file(str(path), bucket, key, ExtraArgs={"ACL": "public-read"}, Config=config)


class ThrottledRelay(socketserver.ThreadingTCPServer):
    """A TCP relay on 127.0.0.1 to ``upstream`` that limits each connection's
    server-to-client rate to ``bytes_per_s`` (a slow link, or a download to kill midway).

    Faults: with ``cut_after`` set, a connection that has relayed that many bytes to the
    client either goes silent while staying open (``stall=True``: a stalled server) or is
    closed (a truncated transfer). Small answers (HEAD, errors) pass untouched.

    ``server_address[1]`` is the relay's port; run it with ``serve_forever`` in a thread.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        upstream: tuple[str, int],
        bytes_per_s: float | None = None,
        cut_after: int | None = None,
        stall: bool = False,
    ) -> None:
        self.upstream = upstream
        self.bytes_per_s = bytes_per_s
        self.cut_after = cut_after
        self.stall = stall
        self.closing = threading.Event()
        super().__init__(("127.0.0.1", 0), _RelayHandler)

    def shutdown(self) -> None:
        """Stop serving and release stalled connections."""
        self.closing.set()
        super().shutdown()


class _RelayHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: ThrottledRelay = self.server  # type: ignore[assignment]
        up = socket.create_connection(server.upstream)

        def pump(src: socket.socket, dst: socket.socket, rate: float | None, cut: bool) -> None:
            sent = 0
            try:
                while chunk := src.recv(16384):
                    if (
                        cut
                        and server.cut_after is not None
                        and sent + len(chunk) > server.cut_after
                    ):
                        dst.sendall(chunk[: server.cut_after - sent])
                        if server.stall:
                            server.closing.wait()
                        return
                    dst.sendall(chunk)
                    sent += len(chunk)
                    if rate:
                        time.sleep(len(chunk) / rate)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        upstream = threading.Thread(target=pump, args=(self.request, up, None, False), daemon=True)
        upstream.start()
        pump(up, self.request, server.bytes_per_s, True)
        upstream.join(timeout=5)
        up.close()
