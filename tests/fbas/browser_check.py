"""Render the FBAS report in headless Chromium and check what the screenshot shows
(`make browser-test`; not part of `make test`, which needs no browser).

Checks: the rendered DOM holds every section; the screenshot holds each section's
coloured bar (`synod.fbas.report.SECTION_COLOURS`) and the trust graph's top-tier node
colour.  The PNG is decoded with the standard library only.  Exit 0 when all hold.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from pathlib import Path

from synod.fbas.report import SECTION_COLOURS
from synod.fbas.synthetic import symmetric_network

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / ".." / "shared" / "data" / "fbas"
TOP_TIER_NODE = "#e8590c"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH, HEIGHT = 1280, 4000
"""The window: the 2019 snapshot's report is about 3,200 pixels tall at this width."""


def _paeth(left: int, up: int, corner: int) -> int:
    estimate = left + up - corner
    distances = (abs(estimate - left), abs(estimate - up), abs(estimate - corner))
    return (left, up, corner)[distances.index(min(distances))]


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, raw rows) of an 8-bit RGB or RGBA PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat = 8, b""
    width = height = channels = 0
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6), "expected 8-bit RGB or RGBA"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows = bytearray()
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            add = (0, left, up, (left + up) // 2, _paeth(left, up, corner))[kind]
            line[i] = (line[i] + add) & 0xFF
        rows += line
        previous = line
    return width, height, channels, bytes(rows)


def colour_counts(image: tuple[int, int, int, bytes]) -> Counter[tuple[int, int, int]]:
    """How many pixels of each colour the image holds."""
    _, _, channels, rows = image
    return Counter(zip(rows[0::channels], rows[1::channels], rows[2::channels], strict=False))


def count_colour(counts: Counter[tuple[int, int, int]], colour: str, tolerance: int = 6) -> int:
    target = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return sum(
        number
        for pixel, number in counts.items()
        if all(abs(pixel[k] - target[k]) <= tolerance for k in range(3))
    )


def make_report(directory: Path) -> Path:
    output = directory / "report.html"
    nodes_file = DATA / "stellarbeat_nodes_2019-09-17.json"
    extra: list[str] = []
    if nodes_file.exists():
        extra = ["--orgs", str(DATA / "stellarbeat_organizations_2019-09-17.json")]
    else:
        nodes_file = directory / "nodes.json"
        nodes_file.write_text(json.dumps(symmetric_network(7)[0]))
    command = [sys.executable, "-m", "synod.cli.main", "fbas", "report", str(nodes_file)]
    subprocess.run([*command, *extra, "-o", str(output)], check=True, timeout=300)
    return output


def main() -> int:
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        print("no Chromium found (make browser-test installs Debian's chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        report = make_report(directory)
        base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        base.append(f"--user-data-dir={directory / 'profile'}")
        url = report.as_uri()
        dom = subprocess.run(
            [*base, "--dump-dom", url], capture_output=True, text=True, check=True, timeout=120
        ).stdout
        screenshot = directory / "report.png"
        subprocess.run(
            [*base, f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={screenshot}", url],
            capture_output=True,
            check=True,
            timeout=120,
        )
        counts = colour_counts(decode_png(screenshot.read_bytes()))
        failures = [
            f"section {section} missing from the DOM"
            for section in SECTION_COLOURS
            if f'id="{section}"' not in dom
        ]
        for section, colour in SECTION_COLOURS.items():
            if count_colour(counts, colour) < 200:
                failures.append(f"section {section}: its bar ({colour}) is not on the screenshot")
        if count_colour(counts, TOP_TIER_NODE) < 20:
            failures.append("trust graph: no top-tier node drawn")
        kept = ROOT / "build" / "fbas-report.png"
        kept.parent.mkdir(exist_ok=True)
        shutil.copy(screenshot, kept)  # for a person to look at
    for failure in failures:
        print(failure, file=sys.stderr)
    verdict = "failed" if failures else "the report renders every section and the graph"
    print(f"browser check: {verdict}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
