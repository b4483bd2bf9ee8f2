"""Index files and model weights from someone else: damaged or hostile ones are refused with a clear error,
and nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_image

from vecsearch import Index, IndexCorruptError, ModelError, load_encoder
from vecsearch.cli import EXIT_INDEX, EXIT_MODEL, main
from vecsearch.manifest import read_manifest


@pytest.fixture
def built(tmp_path: Path, tiny_encoder) -> Path:
    for i, colour in enumerate(["red", "green", "blue"]):
        make_image(tmp_path / "tree" / f"p{i}.png", colour, seed=i)
    with Index.create(tmp_path / "idx", encoder=tiny_encoder) as index:
        index.add(tmp_path / "tree")
    return tmp_path / "idx"


def _edit_manifest(folder: Path, **faiss: object) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["faiss"].update(faiss)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _search_fails(folder: Path, match: str) -> None:
    result = CliRunner().invoke(main, ["search", str(folder), "a red circle"])
    assert result.exit_code == EXIT_INDEX, result.output
    assert match in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["../../outside.faiss", "/etc/passwd", "sub/vectors.faiss", "items.sqlite", ""])
def test_manifest_naming_a_file_outside_the_index(built: Path, name: str) -> None:
    _edit_manifest(built, file=name)
    with pytest.raises(IndexCorruptError, match="names a vector file outside the index"):
        read_manifest(built)
    _search_fails(built, "outside the index")


def test_manifest_of_another_dimension(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["dim"] = 64
    (built / "manifest.json").write_text(json.dumps(manifest))
    _search_fails(built, "dimension")


@pytest.mark.parametrize("dim", [0, -3, "32", 2.5, True, None])
def test_manifest_with_a_nonsense_dimension(built: Path, dim: object) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["dim"] = dim
    (built / "manifest.json").write_text(json.dumps(manifest))
    _search_fails(built, "invalid dimension")


def test_manifest_of_an_older_or_unknown_format(built: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["format"] = "someone-elses-index"
    (built / "manifest.json").write_text(json.dumps(manifest))
    _search_fails(built, "is not a vecsearch index manifest")


def test_vector_file_replaced_by_another_valid_faiss_file(built: Path, tmp_path: Path) -> None:
    """A well-formed FAISS file that is not the one the manifest recorded: the checksum refuses it."""
    import faiss

    other = faiss.IndexIDMap2(faiss.IndexFlatIP(32))
    other.add_with_ids(np.eye(32, dtype=np.float32)[:3], np.array([1, 2, 3], dtype=np.int64))
    faiss.write_index(other, str(built / read_manifest(built)["faiss"]["file"]))
    _search_fails(built, "vector file")


def test_ivf_file_with_a_wrong_count_in_its_header(tmp_path: Path, tiny_encoder) -> None:
    """faiss loads an IVF file whose header lies about its count and searches it silently: the count is
    checked against the database, even when a consistent manifest vouches for the file."""
    import faiss

    from vecsearch.vectors import VectorIndex, file_sha256

    folder = tmp_path / "idx"
    dim = tiny_encoder.dim
    vectors = VectorIndex.create(dim, "IVF4,Flat")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((200, dim)).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    vectors.train(data)
    vectors.add(np.arange(1, 201, dtype=np.int64), data)
    path = tmp_path / "ivf.faiss"
    vectors.save(path)
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"IwFl" and struct.unpack_from("<iq", raw, 4) == (dim, 200)
    struct.pack_into("<q", raw, 8, 150)
    path.write_bytes(bytes(raw))
    assert faiss.read_index(str(path)).ntotal == 150  # faiss itself does not notice

    # an index of 200 items whose manifest names the doctored file, with its true checksum and size
    Index.create(folder, encoder=tiny_encoder).close()
    conn = sqlite3.connect(folder / "items.sqlite")
    conn.execute("INSERT INTO roots(id, path, relpath) VALUES (1, '/nowhere', '../nowhere')")
    for i in range(1, 201):
        conn.execute(
            "INSERT INTO files(id, root_id, relpath, size, mtime_ns, sha256) VALUES (?, 1, ?, 1, 1, ?)",
            (i, f"f{i}.png", f"{i:064x}"),
        )
        conn.execute("INSERT INTO items(id, kind, file_id, added_gen) VALUES (?, 'image', ?, 0)", (i, i))
        conn.execute("INSERT INTO vectors(item_id, data) VALUES (?, ?)", (i, data[i - 1].astype("<f4").tobytes()))
    conn.commit()
    conn.close()
    name = read_manifest(folder)["faiss"]["file"]
    shutil.copy(path, folder / name)
    _edit_manifest(
        folder,
        type="IVF4,Flat",
        family="ivf-flat",
        nlist=4,
        sha256=file_sha256(folder / name),
        bytes=(folder / name).stat().st_size,
        ntotal=200,
    )
    with (
        Index.open(folder, encoder=tiny_encoder) as index,
        pytest.raises(IndexCorruptError, match="holds 150 vectors but the database 200 items"),
    ):
        index.search("a red circle")


def test_relpath_pointing_outside_is_never_followed(built: Path, tiny_encoder) -> None:
    conn = sqlite3.connect(built / "items.sqlite")
    conn.execute("UPDATE files SET relpath = '../../../etc/passwd' WHERE id = (SELECT MIN(id) FROM files)")
    conn.commit()
    conn.close()
    with Index.open(built, encoder=tiny_encoder) as index, pytest.raises(IndexCorruptError, match="outside its folder"):
        index.search("a red circle", k=3)
    _search_fails(built, "outside its folder")


def test_pickled_weights_are_never_unpickled(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A checkpoint whose pickle would run code: loading refuses it, and the code never runs."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_model_dir / "open_clip_config.json", folder / "open_clip_config.json")
    torch.save({"state_dict": Payload()}, folder / "model.bin")
    with pytest.raises(ModelError):
        load_encoder(f"local-dir:{folder}", device="cpu")
    checkpoint = tmp_path / "evil.pt"
    shutil.copy(folder / "model.bin", checkpoint)
    result = CliRunner().invoke(
        main,
        [
            "index",
            str(tmp_path),
            "--index",
            str(tmp_path / "idx"),
            "--model",
            "ViT-B-32",
            "--pretrained",
            str(checkpoint),
        ],
    )
    assert result.exit_code == EXIT_MODEL, result.output
    assert "Traceback" not in result.output
    assert not marker.exists()
