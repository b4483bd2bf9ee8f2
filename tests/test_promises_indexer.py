"""Promises of the crawl's incremental rules (vecsearch/indexer.py, chunks.py, pipeline.py, captions.py)
that no other test pinned down: each test names one.

They were written against the mutants that survived `tests/test_indexing.py`, `tests/test_interrupt.py` and
`tests/test_bad_files.py` (see scripts/results/mutation-indexer-survivors.md and
mutation-chunks-survivors.md), starting with one found by hand: a file is unchanged only when both its size
and its modification time are; either alone is not enough.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vecsearch import Index


def _bmp(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    """An uncompressed picture: its byte size depends on its dimensions only, not on what it shows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(sum(colour))
    pixels = (rng.random((size[1], size[0], 3)) * 40).astype("uint8") + np.array(colour, dtype="uint8") // 2
    Image.fromarray(pixels).save(path, format="BMP")
    return path


@pytest.fixture
def crawled(tmp_path: Path, tiny_encoder: object) -> Iterator[tuple[Index, Path]]:
    folder = tmp_path / "pictures"
    _bmp(folder / "a.bmp", (200, 30, 30))
    _bmp(folder / "b.bmp", (30, 200, 30))
    index = Index.create(tmp_path / "idx", encoder=tiny_encoder)  # type: ignore[arg-type]
    index.add(folder)
    yield index, folder
    index.close()


def _image_vector(index: Index, name: str) -> np.ndarray:
    (item_id,) = [
        int(row[0])
        for row in index.store.conn.execute(
            "SELECT i.id FROM items i JOIN files f ON f.id = i.file_id WHERE f.relpath = ? AND i.kind = 'image'",
            (name,),
        )
    ]
    vector = index.store.vector(item_id)
    assert vector is not None
    return vector


def test_a_picture_edited_in_place_to_the_same_byte_size_is_embedded_again(crawled: tuple[Index, Path]) -> None:
    index, folder = crawled
    path = folder / "a.bmp"
    before, old_size, old_mtime = _image_vector(index, "a.bmp"), path.stat().st_size, path.stat().st_mtime_ns
    _bmp(path, (30, 30, 200))  # a blue picture where the red one was: same dimensions, same byte size
    os.utime(path, ns=(old_mtime + 5_000_000_000, old_mtime + 5_000_000_000))
    assert path.stat().st_size == old_size
    report = index.add()
    assert (report.updated, report.unchanged, report.embedded_images) == (1, 1, 1)
    assert not np.allclose(_image_vector(index, "a.bmp"), before, atol=1e-4)


def test_a_picture_replaced_by_one_of_another_size_and_the_old_time_is_embedded_again(
    crawled: tuple[Index, Path],
) -> None:
    index, folder = crawled
    path = folder / "a.bmp"
    before, old = _image_vector(index, "a.bmp"), path.stat()
    _bmp(path, (30, 30, 200), size=(48, 36))  # as a copy tool that keeps times would leave it
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert path.stat().st_size != old.st_size and path.stat().st_mtime_ns == old.st_mtime_ns
    report = index.add()
    assert (report.updated, report.unchanged, report.embedded_images) == (1, 1, 1)
    assert not np.allclose(_image_vector(index, "a.bmp"), before, atol=1e-4)
