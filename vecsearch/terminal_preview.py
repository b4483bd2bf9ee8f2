"""Thumbnails drawn inside the terminal (`vecsearch search --preview`): kitty, iTerm2 and sixel.

The three encoders are short and written here, checked byte for byte against the protocols' own
descriptions. textual-image, the maintained Python candidate, was weighed and left out: it has no iTerm2
protocol, it draws kitty images through Unicode placeholders that only kitty itself shows, and importing
it queries the terminal. Pillow, which vecsearch already needs, does the decoding, the PNG files and the
sixel palette.

Nothing here writes escape sequences to a pipe or a file: `open_previewer` gives no previewer unless
standard output is a terminal, whatever protocol was asked for.
"""

from __future__ import annotations

import base64
import contextlib
import io
import math
import os
import re
import select
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from .errors import VecsearchError
from .images import load_image

PROTOCOLS = ("kitty", "iterm", "sixel")
CHOICES = ("auto", *PROTOCOLS, "none")
ROWS = 8  # a thumbnail's height in terminal rows
DEFAULT_CELL = (10, 20)  # a VT340's character cell in pixels, for terminals that do not report theirs
DEFAULT_COLUMNS = 80
KITTY_CHUNK = 4096  # the kitty protocol's most base64 bytes in one escape sequence
SIXEL_COLORS = 256  # colour registers: what xterm, foot, mlterm and WezTerm offer
DA1_TIMEOUT = 0.3  # seconds to wait for the terminal's answer to "which features do you have?"

ESC = b"\x1b"
ST = ESC + b"\\"  # string terminator
_DA1_REPLY = re.compile(rb"\x1b\[\?([0-9;]*)c")
_RUN = re.compile(rb"(.)\1{3,}", re.DOTALL)  # four or more equal sixels: shorter as a repeat


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def kitty(png: bytes, *, rows: int | None = None, columns: int | None = None) -> bytes:
    """The kitty graphics protocol: transmit a PNG and display it at the cursor (`a=T,f=100`).

    The base64 payload goes in chunks of at most 4096 bytes, each in its own APC sequence, `m=1` on all
    but the last (`m=0`); only the first carries the keys. `q=2` keeps the terminal from answering on
    our standard input. Only one of `rows`/`columns` should be given: kitty derives the other from the
    picture's aspect ratio (giving both stretches it to the cells).
    """
    payload = base64.standard_b64encode(png)
    keys = "a=T,f=100,q=2" + (f",r={rows}" if rows else "") + (f",c={columns}" if columns else "")
    chunks = [payload[i : i + KITTY_CHUNK] for i in range(0, len(payload), KITTY_CHUNK)] or [b""]
    out = []
    for number, chunk in enumerate(chunks):
        more = 1 if number < len(chunks) - 1 else 0
        control = f"{keys},m={more}" if number == 0 else f"m={more}"
        out.append(ESC + b"_G" + control.encode("ascii") + b";" + chunk + ST)
    return b"".join(out)


def iterm(png: bytes, *, rows: int | None = None, columns: int | None = None, name: str | None = None) -> bytes:
    """iTerm2's inline images (also shown by WezTerm): one OSC 1337 sequence ended by BEL.

    `size` is the file's length in bytes; the height (or width) is in terminal cells, the other side
    follows the aspect ratio.
    """
    args = ["inline=1", f"size={len(png)}"]
    if name:
        args.append("name=" + base64.standard_b64encode(name.encode("utf-8", "surrogateescape")).decode("ascii"))
    args.append(f"width={columns}" if columns else "width=auto")
    args.append(f"height={rows}" if rows else "height=auto")
    args.append("preserveAspectRatio=1")
    header = "\x1b]1337;File=" + ";".join(args) + ":"
    return header.encode("ascii") + base64.standard_b64encode(png) + b"\x07"


def sixel(image: Image.Image, colors: int = SIXEL_COLORS) -> bytes:
    """DEC sixel graphics: DCS q, raster attributes, a palette, then six-pixel bands.

    The picture is quantised to at most `colors` palette entries (Pillow's median cut, no dithering,
    which keeps runs long); each entry is declared as `#n;2;r;g;b` in percent. In each band every colour
    present draws its line of sixels (`?` + a 6-bit column, runs as `!count`), `$` returns to the band's
    start for the next colour and `-` moves to the next band.
    """
    rgb = image.convert("RGB")
    width, height = rgb.size
    quantised = rgb.quantize(colors=max(2, min(colors, 256)), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    indexes = np.asarray(quantised, dtype=np.uint8)
    palette = np.asarray(quantised.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    out = [ESC + b"Pq", b'"1;1;%d;%d' % (width, height)]
    for entry in np.unique(indexes):
        r, g, b = (round(int(v) * 100 / 255) for v in palette[entry])
        out.append(b"#%d;2;%d;%d;%d" % (entry, r, g, b))
    weights = (1 << np.arange(6, dtype=np.uint8))[:, None]
    bands = []
    for top in range(0, height, 6):
        band = indexes[top : top + 6]
        lines = []
        for entry in np.unique(band):
            bits = ((band == entry) * weights[: band.shape[0]]).sum(axis=0, dtype=np.uint8)
            sixels = (bits + 63).tobytes().rstrip(b"?")  # blank sixels at a line's end need not be sent
            lines.append(b"#%d" % entry + _RUN.sub(lambda m: b"!%d%s" % (len(m.group(0)), m.group(1)), sixels))
        bands.append(b"$".join(lines))
    out.append(b"-".join(bands))
    out.append(ST)
    return b"".join(out)


def from_environment(env: Mapping[str, str]) -> str | None:
    """The protocol the environment names: a protocol, "none", or None when only the terminal can tell.

    Inside tmux or screen nothing is shown unless asked for by name: the multiplexer stands between us
    and the terminal, and most builds drop or garble graphics sequences.
    """
    term = env.get("TERM", "")
    if env.get("TMUX") or env.get("STY") or term.startswith(("screen", "tmux")) or term in ("", "dumb"):
        return "none"
    if term in ("xterm-kitty", "xterm-ghostty") or env.get("KITTY_WINDOW_ID") or env.get("TERM_PROGRAM") == "ghostty":
        return "kitty"
    if env.get("TERM_PROGRAM") in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    return None


def sixel_in_reply(reply: bytes) -> bool:
    """Does a DA1 answer (`ESC [ ? 62 ; 4 ; 22 c`) list feature 4, sixel graphics?"""
    found = _DA1_REPLY.search(reply)
    return bool(found) and b"4" in found.group(1).split(b";")  # type: ignore[union-attr]  # bool(found) checked


def ask_for_sixel(fd_in: int, fd_out: int, timeout: float = DA1_TIMEOUT) -> bool:
    """Ask the terminal for its primary device attributes (DA1, `ESC [ c`) and read the answer.

    Input is switched to non-canonical mode without echo while waiting, so the answer never shows; a
    terminal that does not answer in `timeout` seconds gets no pictures.
    """
    try:
        import termios
        import tty
    except ImportError:  # not a POSIX terminal
        return False
    try:
        saved = termios.tcgetattr(fd_in)
    except (termios.error, OSError):
        return False
    reply = b""
    try:
        tty.setcbreak(fd_in, termios.TCSANOW)
        os.write(fd_out, ESC + b"[c")
        deadline = time.monotonic() + timeout
        while not _DA1_REPLY.search(reply):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd_in], [], [], left)[0]:
                break
            data = os.read(fd_in, 256)
            if not data:
                break
            reply += data
    except (termios.error, OSError):
        return False
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd_in, termios.TCSAFLUSH, saved)
    return sixel_in_reply(reply)


def terminal_size(fd: int) -> tuple[int, tuple[int, int]]:
    """Columns and the character cell's pixel size (width, height), as the terminal reports them."""
    try:
        import fcntl
        import struct
        import termios

        rows, columns, x_pixels, y_pixels = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    except (ImportError, OSError):
        return DEFAULT_COLUMNS, DEFAULT_CELL
    columns = columns or DEFAULT_COLUMNS
    if x_pixels and y_pixels and rows:
        return columns, (max(1, x_pixels // columns), max(1, y_pixels // rows))
    return columns, DEFAULT_CELL


@dataclass(frozen=True)
class Previewer:
    """Turns a picture into the escape sequence that draws it `rows` rows high."""

    protocol: str
    rows: int = ROWS
    columns: int = DEFAULT_COLUMNS
    cell: tuple[int, int] = DEFAULT_CELL

    @property
    def box(self) -> tuple[int, int]:
        """The most pixels a thumbnail may take: `rows` rows high, the terminal's width but one column."""
        return max(1, self.columns - 1) * self.cell[0], self.rows * self.cell[1]

    def thumbnail(self, source: str | Path | bytes) -> Image.Image:
        """The picture fitted to `box` (small ones are enlarged, so every hit's thumbnail is as high)."""
        box_w, box_h = self.box
        image = load_image(source if isinstance(source, bytes) else Path(source), min_size=box_h)
        scale = min(box_w / image.width, box_h / image.height)
        size = (max(1, min(box_w, round(image.width * scale))), max(1, min(box_h, round(image.height * scale))))
        return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)

    def render(self, source: str | Path | bytes, name: str | None = None) -> bytes | None:
        """The escape sequence for one picture, or None when it cannot be read (the text line stays)."""
        try:
            image = self.thumbnail(source)
        except (VecsearchError, OSError, ValueError, MemoryError):
            return None
        if self.protocol == "sixel":
            return sixel(image)
        # the limiting side in cells; the terminal keeps the aspect ratio for the other
        box_w, box_h = self.box
        tall = image.height * box_w >= image.width * box_h
        rows, columns = (self.rows, None) if tall else (None, math.ceil(image.width / self.cell[0]))
        png = png_bytes(image)
        if self.protocol == "kitty":
            return kitty(png, rows=rows, columns=columns)
        return iterm(png, rows=rows, columns=columns, name=name)


def _is_tty(stream: IO[str] | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):  # closed
        return False


def open_previewer(
    requested: str,
    stdout: IO[str] | None = None,
    stdin: IO[str] | None = None,
    env: Mapping[str, str] | None = None,
    rows: int = ROWS,
) -> tuple[Previewer | None, str | None]:
    """The previewer for `--preview=requested`, and a note for standard error when one was asked for by
    name but cannot be used.

    "auto" trusts the environment (kitty, iTerm2, WezTerm, Ghostty) and otherwise asks the terminal
    whether it draws sixels, only when both standard input and output are that terminal. Standard output
    that is not a terminal gets no previewer, even for a protocol named outright.
    """
    stdout = sys.stdout if stdout is None else stdout
    stdin = sys.stdin if stdin is None else stdin
    env = os.environ if env is None else env
    if requested == "none":
        return None, None
    if requested not in CHOICES:
        raise ValueError(f"unknown preview protocol {requested!r}: choose one of {', '.join(CHOICES)}")
    if not _is_tty(stdout):
        note = None if requested == "auto" else f"--preview={requested}: output is not a terminal, printing text only"
        return None, note
    protocol: str | None = requested
    if requested == "auto":
        protocol = from_environment(env)
        if protocol is None and _is_tty(stdin):
            stdout.flush()
            protocol = "sixel" if ask_for_sixel(stdin.fileno(), stdout.fileno()) else "none"
        if protocol in (None, "none"):
            return None, None
    assert protocol is not None
    columns, cell = terminal_size(stdout.fileno())
    return Previewer(protocol, rows=rows, columns=columns, cell=cell), None
