"""AMI over TLS (Asterisk's port 5039): the link verifies the certificate it is shown.

A TLS terminator in front of the simulator stands in for Asterisk's `tlsenable = yes`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

from pbxlink.daemon import Daemon

from conftest import need
from test_daemon import config, simulator, until


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    need(shutil.which("openssl") is not None, "openssl not installed")
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=pbx.test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def tls_front(cert: Path, key: Path, backend_port: int) -> asyncio.Server:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", backend_port)
        await asyncio.gather(pipe(reader, b_writer), pipe(b_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)


@pytest.mark.parametrize("trusted", [True, False])
async def test_tls_link_verifies_the_server(tmp_path: Path, trusted: bool) -> None:
    cert, key = make_cert(tmp_path, "pbx")
    other, _ = make_cert(tmp_path, "someone-else")
    async with simulator() as sim:
        front = await tls_front(cert, key, sim.port)
        port = front.sockets[0].getsockname()[1]
        cfg = config(
            tmp_path / "state", port, tls=True, tls_ca_file=str(cert if trusted else other)
        )
        daemon = Daemon(cfg)
        task = asyncio.create_task(daemon.run())
        try:
            if trusted:
                await until(lambda: daemon.ami_state == "up", what="the TLS link up")
                await asyncio.wait_for(sim.wait_played(sim.play_once(["04_in_direct_busy"])), 10)
                await until(lambda: daemon.store.written == 1, what="the call stored")
            else:
                await asyncio.sleep(1.0)
                assert daemon.ami_state == "down" and sim.clients == 0
                assert not task.done()  # an untrusted peer is retried, not fatal
        finally:
            daemon.stop()
            assert await asyncio.wait_for(task, 10) == 0
            front.close()
