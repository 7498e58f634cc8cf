"""The chat playground at / in headless Chromium: the streamed reply appears on the page."""
from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import requests

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=15000", *args], capture_output=True, text=True, timeout=timeout)


def test_page_is_served_without_a_key(lm_server):
    page = requests.get(lm_server.url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/v1/chat/completions" in page.text and "stream: true" in page.text


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
def test_reply_streams_into_the_page(scripted_server, tmp_path):
    url = f"{scripted_server.url}/?prompt=Say%20hi"
    # Headless Chromium dumps the DOM when its virtual-time budget runs out, and that clock does
    # not always wait for a streamed response body: a dump can catch the reply mid-stream. Each
    # attempt is a fresh page load, so a few of them make the check deterministic in practice.
    for _ in range(6):
        dom = chromium("--dump-dom", url).stdout
        reply = re.search(r'<div class="msg assistant" data-state="(\w+)">([^<]*)</div>', dom)
        assert reply is not None, dom[-2000:]
        if reply.group(1) == "done":
            break
    assert reply.groups() == ("done", "Hi.")  # the script's reply, <extra_id_1> removed
    assert '<div class="msg user">Say hi</div>' in dom and ">scripted<" in dom
    screenshot = tmp_path / "playground.png"
    chromium(f"--screenshot={screenshot}", "--window-size=900,500", url)
    width, height, colours = png_summary(screenshot)
    assert (width, height) == (900, 500) and colours > 10  # rendered, not a blank page


def png_summary(path: Path) -> tuple[int, int, int]:
    """Width, height and a count of distinct byte values in the image data (no imaging library)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    chunks, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            chunks += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(chunks)))
