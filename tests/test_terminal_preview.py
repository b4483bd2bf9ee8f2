"""Thumbnails in the terminal (`vecsearch search --preview`): each protocol's bytes checked against its
description (kitty graphics protocol, iTerm2 inline images, DEC sixel, the last decoded back to pixels),
the choice of protocol, plain text into pipes, and whole searches run on real terminals: a pseudo-terminal
opened here (the command sees a tty; the test plays the terminal's part, answering its questions), and
xterm emulating a VT340 under Xvfb, whose screen is read back to see the thumbnails drawn."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import COLOURS, make_image
from PIL import Image

from vecsearch import Index
from vecsearch.cli import main
from vecsearch.terminal_preview import (
    CHOICES,
    KITTY_CHUNK,
    Previewer,
    from_environment,
    iterm,
    kitty,
    open_previewer,
    png_bytes,
    sixel,
    sixel_in_reply,
)

KITTY_SEQUENCE = re.compile(rb"\x1b_G([^;\x1b]*);([^\x1b]*)\x1b\\")
ITERM_SEQUENCE = re.compile(rb"\x1b\]1337;File=([^:\x07]*):([A-Za-z0-9+/=]*)\x07")
SIXEL_SEQUENCE = re.compile(rb"\x1bPq[^\x1b]*\x1b\\")


def noisy(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """Random pixels: a PNG that does not compress, so its base64 needs many kitty chunks."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def smooth(size: tuple[int, int]) -> Image.Image:
    """Gradients in three channels: many colours for the sixel palette to approximate."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    rgb = np.stack([x * 255 // max(1, size[0] - 1), y * 255 // max(1, size[1] - 1), (x + y) * 127 // sum(size)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


# kitty


def kitty_chunks(data: bytes) -> list[tuple[dict[str, str], bytes]]:
    chunks = [
        (dict(kv.split("=") for kv in m.group(1).decode().split(",")), m.group(2))
        for m in KITTY_SEQUENCE.finditer(data)
    ]
    assert b"".join(m.group(0) for m in KITTY_SEQUENCE.finditer(data)) == data  # nothing between the sequences
    return chunks


def test_kitty_chunks_keys_and_payload() -> None:
    picture = noisy((90, 70))
    png = png_bytes(picture)
    chunks = kitty_chunks(kitty(png, rows=8))
    assert len(chunks) == -(-len(base64.standard_b64encode(png)) // KITTY_CHUNK) > 3
    first, *rest = chunks
    assert first[0] == {"a": "T", "f": "100", "q": "2", "r": "8", "m": "1"}
    assert [keys for keys, _ in rest] == [{"m": "1"}] * (len(rest) - 1) + [{"m": "0"}]  # only m after the first
    for _, payload in chunks[:-1]:
        assert len(payload) == KITTY_CHUNK  # full chunks are 4096 bytes, a multiple of 4
    assert 0 < len(chunks[-1][1]) <= KITTY_CHUNK
    decoded = base64.b64decode(b"".join(payload for _, payload in chunks), validate=True)
    assert decoded == png
    assert Image.open(io.BytesIO(decoded)).size == (90, 70)


def test_kitty_single_chunk_and_columns() -> None:
    png = png_bytes(Image.new("RGB", (20, 10), (255, 0, 0)))
    [(keys, payload)] = kitty_chunks(kitty(png, columns=12))
    assert keys == {"a": "T", "f": "100", "q": "2", "c": "12", "m": "0"}
    assert base64.b64decode(payload) == png


# iTerm2


def test_iterm_header_and_payload() -> None:
    png = png_bytes(noisy((40, 30)))
    data = iterm(png, rows=8, name="cat picture.png")
    found = ITERM_SEQUENCE.fullmatch(data)
    assert found, data[:80]
    args = dict(kv.split("=", 1) for kv in found.group(1).decode().split(";"))
    decoded = base64.b64decode(found.group(2), validate=True)
    assert decoded == png and int(args["size"]) == len(decoded)
    assert args["inline"] == "1" and args["preserveAspectRatio"] == "1"
    assert args["height"] == "8" and args["width"] == "auto"
    assert base64.b64decode(args["name"]).decode() == "cat picture.png"
    assert Image.open(io.BytesIO(decoded)).size == (40, 30)


# sixel


def decode_sixel(data: bytes) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, ...]]]:
    """A small sixel reader after the DEC description: the pixels (RGB, 0-255), which were painted, and
    the palette in percent. It checks the structure it reads on the way."""
    assert data.startswith(b"\x1bPq") and data.endswith(b"\x1b\\")
    body = data[3:-2].decode("ascii")
    raster = re.match(r'"1;1;(\d+);(\d+)', body)
    assert raster, body[:20]
    width, height = int(raster.group(1)), int(raster.group(2))
    pixels = np.zeros((height, width, 3), dtype=np.int64)
    painted = np.zeros((height, width), dtype=bool)
    palette: dict[int, tuple[int, ...]] = {}
    x = y = 0
    colour = -1
    at = raster.end()
    while at < len(body):
        char = body[at]
        if char == "#":
            found = re.compile(r"#(\d+)(?:;2;(\d+);(\d+);(\d+))?").match(body, at)
            assert found
            colour = int(found.group(1))
            if found.group(2) is not None:
                palette[colour] = tuple(int(v) for v in found.group(2, 3, 4))
            at = found.end()
            continue
        if char in "$-":
            assert body[at - 1] not in "$-", "an empty colour line"
            x, y = 0, y + (6 if char == "-" else 0)
            at += 1
            continue
        found = re.compile(r"(?:!(\d+))?([?-~])").match(body, at)
        assert found, f"unexpected {body[at : at + 10]!r}"
        count, bits = int(found.group(1) or 1), ord(found.group(2)) - 63
        assert colour in palette
        for row in range(6):
            if bits >> row & 1:
                assert y + row < height and x + count <= width
                pixels[y + row, x : x + count] = [round(v * 255 / 100) for v in palette[colour]]
                painted[y + row, x : x + count] = True
        x += count
        at = found.end()
    assert y // 6 == (height - 1) // 6, "one band per six rows"
    return pixels, painted, palette


def test_sixel_structure_and_palette() -> None:
    picture = smooth((50, 23))
    data = sixel(picture)
    assert data.startswith(b'\x1bPq"1;1;50;23#')
    _, painted, palette = decode_sixel(data)
    assert painted.all()
    assert 2 <= len(palette) <= 256
    assert all(0 <= v <= 100 for entry in palette.values() for v in entry)
    body = data.split(b"\x1b\\")[0]
    bands = body[body.index(b"-") - 1 :].split(b"-")
    assert len(body.split(b"-")) == 4  # 23 rows: bands at 0, 6, 12, 18
    for band in bands:
        lines = band.split(b"$")
        assert all(re.match(rb"#\d+[?-~!]", line) for line in lines[1:])  # each colour line selects its colour


def test_sixel_of_a_few_colours_is_exact_and_run_length_coded() -> None:
    rgb = np.zeros((13, 60, 3), dtype=np.uint8)
    rgb[:, :] = (255, 255, 255)
    rgb[2:9, 5:45] = (255, 0, 0)
    rgb[7:13, 30:60] = (0, 0, 255)
    picture = Image.fromarray(rgb)
    data = sixel(picture)
    pixels, painted, palette = decode_sixel(data)
    assert painted.all() and len(palette) == 3
    assert np.array_equal(pixels, rgb.astype(np.int64))  # 0, 100 % are exact
    assert re.search(rb"!40[?-~]", data), "a 40-pixel run is sent as !40"


def test_sixel_decodes_back_to_the_thumbnail() -> None:
    """A picture of many colours comes back within the palette's quantisation error."""
    picture = smooth((120, 90))
    pixels, painted, palette = decode_sixel(sixel(picture))
    assert painted.all()
    error = np.abs(pixels - np.asarray(picture, dtype=np.int64))
    assert error.mean() < 4 and error.max() <= 40, (error.mean(), error.max())
    few = decode_sixel(sixel(picture, colors=16))[0]
    assert np.abs(few - np.asarray(picture, dtype=np.int64)).mean() > error.mean()  # fewer colours, larger error


def test_previewer_fits_rows_and_keeps_the_aspect(tmp_path: Path) -> None:
    path = make_image(tmp_path / "wide.png", "red", size=(96, 48))
    previewer = Previewer("sixel", rows=8, columns=100, cell=(10, 20))
    assert previewer.thumbnail(path).size == (320, 160)
    data = previewer.render(path)
    assert data is not None and data.startswith(b'\x1bPq"1;1;320;160')
    assert previewer.render(path.read_bytes()) == data  # a picture read from its source (a tar member, a URI)
    pixels, painted, _ = decode_sixel(data)
    # the middle of the red square, as drawn and as decoded
    assert painted.all() and np.abs(pixels[80, 160] - COLOURS["red"]).max() <= 12
    narrow = Previewer("kitty", rows=8, columns=20, cell=(10, 20))  # 190 pixels wide at most
    chunks = kitty_chunks(narrow.render(path) or b"")
    assert chunks[0][0]["c"] == "19" and "r" not in chunks[0][0]  # the width limits it: columns, rows follow
    png = base64.b64decode(b"".join(payload for _, payload in chunks))
    assert Image.open(io.BytesIO(png)).size == (190, 95)


def test_unreadable_pictures_give_no_preview(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    for protocol in ("kitty", "iterm", "sixel"):
        previewer = Previewer(protocol)
        assert previewer.render(tmp_path / "broken.png") is None
        assert previewer.render(tmp_path / "gone.png") is None
        assert previewer.render(b"\x89PNG\r\n") is None


# which protocol


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TERM": "xterm-kitty"}, "kitty"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
        ({"TERM": "xterm-ghostty"}, "kitty"),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, "iterm"),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, "iterm"),
        ({"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"}, "iterm"),
        ({"TERM": "xterm-256color"}, None),  # ask the terminal
        ({"TERM": "tmux-256color", "TMUX": "/tmp/tmux-0/default,1,0", "KITTY_WINDOW_ID": "1"}, "none"),
        ({"TERM": "screen", "STY": "1.pts-0.host"}, "none"),
        ({"TERM": "dumb"}, "none"),
        ({}, "none"),
    ],
)
def test_protocol_from_the_environment(env: dict[str, str], expected: str | None) -> None:
    assert from_environment(env) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"\x1b[?63;1;2;4;6;9;15;16;22;28c", True),  # xterm -ti vt340
        (b"\x1b[?62;4c", True),
        (b"\x1b[?65;1;9c", False),  # a VT525 without sixels
        (b"\x1b[?64;14;4", False),  # cut short
        (b"", False),
    ],
)
def test_sixel_in_the_device_attributes(reply: bytes, expected: bool) -> None:
    assert sixel_in_reply(reply) is expected


def test_no_previewer_for_a_pipe() -> None:
    pipe = io.StringIO()
    assert open_previewer("auto", pipe, pipe, {"TERM": "xterm-kitty"}) == (None, None)
    previewer, note = open_previewer("kitty", pipe, pipe, {"TERM": "xterm-kitty"})
    assert previewer is None and note and "not a terminal" in note
    assert open_previewer("none", pipe, pipe, {}) == (None, None)
    with pytest.raises(ValueError):
        open_previewer("png", pipe, pipe, {})
    assert CHOICES == ("auto", "kitty", "iterm", "sixel", "none")


# the command


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, tiny_encoder) -> tuple[Path, str]:
    """An index of four pictures (wide squares: red, blue, green, yellow), the blue one deleted after
    indexing, and the query `id:N` of the red one: the other three come back (a query never finds itself),
    from the stored vectors, so the command loads no model."""
    root = tmp_path_factory.mktemp("preview")
    for i, colour in enumerate(["red", "blue", "green", "yellow"]):
        make_image(root / "pictures" / f"{colour}.png", colour, "square", size=(96, 48), seed=i)
    with Index.create(root / "index", encoder=tiny_encoder) as index:
        index.add(root / "pictures")
        red = next(i for i in range(1, 5) if (item := index.item(i)) and item.path.endswith("red.png"))
    (root / "pictures" / "blue.png").unlink()
    return root / "index", f"id:{red}"


def test_cli_previews_never_go_into_a_pipe(indexed: tuple[Path, str]) -> None:
    index, query = indexed
    runner = CliRunner()
    plain = runner.invoke(main, ["search", str(index), query], catch_exceptions=False)
    assert plain.exit_code == 0 and len(plain.stdout.splitlines()) == 4
    for protocol in ("kitty", "iterm", "sixel", "auto"):
        result = runner.invoke(main, ["search", str(index), query, f"--preview={protocol}"])
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and result.stdout == plain.stdout
        assert ("not a terminal" in result.stderr) is (protocol != "auto")
    quiet = runner.invoke(main, ["-q", "search", str(index), query, "--preview=kitty"])
    assert quiet.stderr == "" and quiet.stdout == plain.stdout
    bare = runner.invoke(main, ["search", str(index), "--preview", query])  # bare, then a query term
    assert bare.exit_code == 0 and bare.stdout == plain.stdout
    as_json = runner.invoke(main, ["search", str(index), query, "--json", "--preview=sixel"])
    assert as_json.exit_code == 0 and len(json.loads(as_json.stdout)) == 3 and as_json.stderr == ""
    wrong = runner.invoke(main, ["search", str(index), query, "--preview=png"])
    assert wrong.exit_code == 2 and "png" in wrong.stderr


def run_on_pty(args: list[str], env: dict[str, str], answer: bytes | None = None) -> tuple[int, bytes, str]:
    """Run a command with a pseudo-terminal (100 x 40 cells of 10 x 20 pixels) as its standard input and
    output, playing the terminal: `answer` is sent back when the command asks for device attributes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 1000, 800))
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=subprocess.PIPE, env=env, close_fds=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # the command ended and closed the terminal
                break
            if not data:
                break
            if answer and b"\x1b[c" in output + data and b"\x1b[c" not in output:
                os.write(master, answer)
            output += data
    finally:
        os.close(master)
        code = process.wait(timeout=30)
    assert process.stderr is not None
    return code, output, process.stderr.read().decode()


def terminal_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "STY", "KITTY_WINDOW_ID", "TERM_PROGRAM")}
    env.pop("LC_TERMINAL", None)
    return {**env, "TERM": "xterm-256color", **extra}


def rows_with_pictures(output: bytes, picture: re.Pattern[bytes]) -> list[tuple[str, bool]]:
    """Each result line and whether a picture follows it before the next line."""
    lines = re.split(rb"\r?\n", output)
    rows = []
    for line in lines:
        text = picture.sub(b"", line).replace(b"\x1b[c", b"").decode()
        if re.match(r"\s*\d+\s+\d\.\d{4}\s+image", text):
            rows.append((text.split()[4], False))
        elif picture.search(line) and rows:
            rows[-1] = (rows[-1][0], True)
    return rows


@pytest.mark.parametrize(
    ("env", "answer", "picture"),
    [
        ({}, b"\x1b[?63;1;2;4;6;9;15;22c", SIXEL_SEQUENCE),  # asked, says sixel
        ({"TERM": "xterm-kitty"}, None, re.compile(rb"(?:\x1b_G[^\x1b]*\x1b\\)+")),
        ({"TERM_PROGRAM": "WezTerm"}, None, ITERM_SEQUENCE),
        ({}, b"\x1b[?62;1;6c", None),  # asked, no sixels: text
        ({"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "tmux-256color"}, None, None),
    ],
    ids=["sixel-asked", "kitty", "wezterm", "no-sixel", "tmux"],
)
def test_search_on_a_terminal(
    indexed: tuple[Path, str], env: dict[str, str], answer: bytes | None, picture: re.Pattern[bytes] | None
) -> None:
    index, query = indexed
    args = [sys.executable, "-m", "vecsearch", "search", str(index), query, "--preview"]
    code, output, errors = run_on_pty(args, terminal_env(**env), answer)
    assert code == 0, errors
    assert (b"\x1b[c" in output) is (answer is not None)  # only a terminal the environment does not name is asked
    if picture is None:
        assert b"\x1b" not in output.replace(b"\x1b[c", b"")
        return
    rows = rows_with_pictures(output, picture)
    assert sorted(Path(path).name for path, _ in rows) == ["blue.png", "green.png", "yellow.png"]
    for path, shown in rows:  # every picture on disk is shown under its line; the deleted one is not
        assert shown is Path(path).exists(), (path, output[:300])
    if picture is SIXEL_SEQUENCE:
        first = SIXEL_SEQUENCE.search(output)
        assert first and first.group(0).startswith(b'\x1bPq"1;1;320;160')  # 8 rows of 20 pixels


def xvfb_screen(path: Path) -> np.ndarray:
    """Xvfb's screen as it keeps it in its -fbdir file (X window dump format, 32-bit pixels): RGB rows."""
    data = path.read_bytes()
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height, byte_order = fields[0], fields[4], fields[5], fields[7]
    bits_per_pixel, bytes_per_line, colours = fields[11], fields[12], fields[19]
    assert bits_per_pixel == 32
    start = header_size + 12 * colours
    pixels = np.frombuffer(data, dtype=np.uint8, count=bytes_per_line * height, offset=start)
    pixels = pixels.reshape(height, bytes_per_line)[:, : width * 4].reshape(height, width, 4)
    return pixels[..., 2::-1] if byte_order == 0 else pixels[..., 1:]  # BGRX (LSB first) or XRGB


def test_search_in_xterm_under_xvfb(indexed: tuple[Path, str], tmp_path: Path) -> None:
    """xterm, as a VT340 with 256 colour registers, answers the command's question itself, and draws the
    sixel thumbnails: the green and yellow squares appear on its screen (not the blue one, deleted)."""
    missing = [tool for tool in ("xterm", "Xvfb", "script") if shutil.which(tool) is None]
    if missing:
        if os.environ.get("VECSEARCH_REQUIRE_XTERM") == "1":
            pytest.fail(f"{', '.join(missing)} required here (Debian: xterm xvfb)")
        pytest.skip(f"{', '.join(missing)} not installed (Debian: xterm xvfb)")
    index, query = indexed
    screen = tmp_path / "screen"
    screen.mkdir()
    ready, told = os.pipe()  # Xvfb picks a free display and writes its number here once it listens
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(told), "-screen", "0", "1000x900x24", "-fbdir", str(screen), "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(told,),
    )
    os.close(told)
    try:
        with os.fdopen(ready) as numbers:
            display = ":" + numbers.readline().strip()
        assert display != ":", "Xvfb did not start"
        env = {**terminal_env(), "DISPLAY": display}
        log, status, done = tmp_path / "typescript", tmp_path / "status", tmp_path / "done"
        search = f"{sys.executable} -m vecsearch search {index} {query} --preview"
        # the screen stays up until the test has read it
        inner = f"script -q -e -c '{search}' {log}; echo $? > {status}; touch {done}; sleep 30"
        xterm = subprocess.Popen(
            ["xterm", "-ti", "vt340", "-xrm", "XTerm*numColorRegisters: 256", "-geometry", "100x45+0+0",
             "-e", "sh", "-c", inner],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            for _ in range(300):
                if done.exists() or xterm.poll() is not None:
                    break
                time.sleep(0.1)
            assert done.exists(), xterm.stderr.read().decode() if xterm.poll() is not None and xterm.stderr else ""
            time.sleep(0.5)  # xterm draws what it has read
            assert status.read_text().strip() == "0", log.read_bytes()[-500:]
            typescript = log.read_bytes()
            assert len(SIXEL_SEQUENCE.findall(typescript)) == 2, typescript[:300]  # blue.png is gone
            pixels = xvfb_screen(screen / "Xvfb_screen0").astype(np.int64)
        finally:
            xterm.kill()
            xterm.wait()
    finally:
        server.kill()
        server.wait()
    shown = {
        colour: int((np.abs(pixels - np.array(COLOURS[colour])).max(axis=-1) <= 24).sum())
        for colour in ("red", "yellow", "green", "blue")
    }
    drawn = {colour for colour, count in shown.items() if count > 40 * 40}
    assert drawn == {"yellow", "green"}, shown  # the hits' squares still on disk


def test_search_in_a_tmux_pane(indexed: tuple[Path, str], tmp_path: Path) -> None:
    """Inside tmux, --preview stays text: the pane shows the table and the command wrote no escape sequence."""
    if shutil.which("tmux") is None or shutil.which("script") is None:
        pytest.skip("tmux not installed")
    index, query = indexed
    log, status = tmp_path / "typescript", tmp_path / "status"
    search = f"{sys.executable} -m vecsearch search {index} {query} --preview"
    tmux = ["tmux", "-S", str(tmp_path / "socket"), "-f", "/dev/null"]
    env = {k: v for k, v in terminal_env().items() if k != "TMUX"}
    subprocess.run(
        [
            *tmux,
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "30",
            f"script -q -e -c '{search}' {log}; echo $? > {status}; sleep 30",
        ],
        env=env,
        check=True,
    )
    try:
        for _ in range(300):
            if status.exists() and status.read_text().strip():
                break
            time.sleep(0.1)
        assert status.read_text().strip() == "0"
        pane = subprocess.run([*tmux, "capture-pane", "-p"], env=env, capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run([*tmux, "kill-server"], env=env, check=False, capture_output=True)
    assert sorted(Path(line.split()[4]).name for line in pane.splitlines() if " image " in line) == [
        "blue.png",
        "green.png",
        "yellow.png",
    ]
    assert b"\x1b" not in log.read_bytes()
