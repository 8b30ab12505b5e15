"""The Wavefront grid as a picture: a BMP with one pixel per cell, coloured by state.

Written every ``BITMAP_INTERVAL`` seconds by the local and the distributed runs
alike (``--bitmap``), always replaced atomically so a viewer never reads half a file.
"""

from __future__ import annotations

import os
import struct

BITMAP_INTERVAL = 5.0  # seconds between two pictures while the run goes on

COLOURS = {"complete": (60, 170, 60), "running": (230, 200, 40), "ready": (60, 110, 220),
           "waiting": (200, 200, 200)}


def write_bitmap(path: str, xsize: int, ysize: int, known: dict, running: set,
                 ready: set) -> None:
    """A 24-bit BMP, one pixel per cell, x to the right and y upwards."""
    width, height = xsize + 1, ysize + 1
    pad = (4 - width * 3 % 4) % 4
    rows = []
    for y in range(height):
        row = bytearray()
        for x in range(width):
            cell = (x, y)
            state = ("complete" if cell in known else "running" if cell in running
                     else "ready" if cell in ready else "waiting")
            r, g, b = COLOURS[state]
            row += bytes((b, g, r))
        rows.append(bytes(row) + b"\0" * pad)
    pixels = b"".join(rows)
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header + info + pixels)
    os.replace(tmp, path)
