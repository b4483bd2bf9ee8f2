"""The shards as an exchange format: any index out to Parquet shards (the distributed crawl's columns) or
to clip-retrieval's layout (`img_emb/img_emb_N.npy`, `text_emb/text_emb_N.npy`,
`metadata/metadata_N.parquet`, which autofaiss's embedding_reader and clip-retrieval's back end read),
and an index built from either without embedding a picture again.

An import commits through the local crawler, like the distributed crawl: the rows become listed files
whose hashes and vectors are known, so the crawler's rules (duplicates, captions) apply unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..crawl import FoundFile, WalkResult, clean_captions, inline_signature, text_hash
from ..errors import ModelMismatchError, VecsearchError
from ..indexer import Crawler, CrawlSettings
from ..model import IndexModel
from ..pipeline import progress_bar
from ..results import CrawlReport
from ..roots import FOLDER, LISTING, RootPlanner, Scope, item_location, root_kind
from ..store import RootRow, Store
from ..vector_file import VectorFile
from .shards import SHARD, ShardPrefill, shard_schema

EXPORT_INFO = "vecsearch-export.json"
FORMATS = ("parquet", "clip-retrieval")


@dataclass(frozen=True)
class ExportReport:
    folder: str
    format: str
    pictures: int
    captions: int
    files: int  # data files written

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --- export -------------------------------------------------------------------------------------------


def export_index(
    store: Store,
    root_path: Callable[[RootRow], Path],
    model: IndexModel,
    target: Path,
    fmt: str = "parquet",
    shard_size: int = 100_000,
    progress: bool = False,
) -> ExportReport:
    """Write every picture of the index with its captions and vectors into `target` (new or empty)."""
    if fmt not in FORMATS:
        raise VecsearchError(f"unknown export format {fmt!r}: {' or '.join(FORMATS)}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise VecsearchError(f"{target} is not an empty folder: export into a new one")
    target.mkdir(parents=True, exist_ok=True)
    roots = {root.id: root for root in store.roots()}
    where = {root.id: root_path(root) for root in roots.values()}
    pictures = captions = files = 0
    bar = progress_bar(store.file_count(), "exporting", progress)
    after, number = 0, 0
    try:
        while True:
            with store.snapshot():
                rows = store.files_from(after, shard_size)
                if not rows:
                    break
                first, last = rows[0].id, rows[-1].id
                images = {f: (i, v) for f, i, _, v in store.item_vectors_of_files(first, last, "image")}
                texts: dict[int, list[tuple[str, bytes]]] = {}
                for file_id, _, text, vector in store.item_vectors_of_files(first, last, "caption"):
                    texts.setdefault(file_id, []).append((text or "", vector))
            records = []
            for row in rows:
                root = roots[row.root_id]
                image = images.get(row.id)
                lines = texts.get(row.id, [])
                records.append(
                    {
                        "id": image[0] if image else None,
                        "root_id": row.root_id,
                        "root": root.path,
                        "root_kind": root_kind(root),
                        "key": row.relpath,
                        "path": item_location(root, where[root.id], row.relpath),
                        "size": row.size,
                        "mtime_ns": row.mtime_ns,
                        "sha256": row.sha256,
                        "captions": [text for text, _ in lines],
                        "vector": np.frombuffer(image[1], dtype="<f4") if image else None,
                        "caption_vectors": [np.frombuffer(v, dtype="<f4") for _, v in lines],
                    }
                )
                captions += len(lines)
            pictures += sum(1 for r in records if r["vector"] is not None)
            _write_part(target, fmt, number, records, model.dim)
            files += 1
            number += 1
            after = last
            bar.update(len(rows))
    finally:
        bar.close()
    info = {"format": fmt, "model": model.record, "dim": model.dim, "fingerprint": model.fingerprint}
    (target / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return ExportReport(str(target), fmt, pictures, captions, files)


def _write_part(target: Path, fmt: str, number: int, records: list[dict[str, Any]], dim: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fmt == "parquet":
        for record in records:
            record["vector"] = None if record["vector"] is None else record["vector"].tolist()
            record["caption_vectors"] = [v.tolist() for v in record["caption_vectors"]]
        pq.write_table(pa.Table.from_pylist(records, schema=shard_schema(dim)), target / SHARD.format(number))
        return
    records = [r for r in records if r["vector"] is not None]  # clip-retrieval's rows are pictures
    name = f"{number:05d}"
    for folder in ("img_emb", "text_emb", "metadata"):
        (target / folder).mkdir(exist_ok=True)
    zeros = np.zeros(dim, dtype=np.float32)
    np.save(
        target / "img_emb" / f"img_emb_{name}.npy", np.stack([r["vector"] for r in records]) if records else zeros[:0]
    )
    firsts = [r["caption_vectors"][0] if r["caption_vectors"] else zeros for r in records]
    np.save(target / "text_emb" / f"text_emb_{name}.npy", np.stack(firsts) if records else zeros[:0])
    metadata = {
        "image_path": [r["path"] for r in records],
        "caption": [r["captions"][0] if r["captions"] else "" for r in records],
        "key": [r["key"] for r in records],
        "root": [r["root"] for r in records],
        "root_kind": [r["root_kind"] for r in records],
        "size": [r["size"] for r in records],
        "mtime_ns": [r["mtime_ns"] for r in records],
        "sha256": [r["sha256"] for r in records],
        "captions": [r["captions"] for r in records],
    }
    pq.write_table(pa.table(metadata), target / "metadata" / f"metadata_{name}.parquet")


# --- import -------------------------------------------------------------------------------------------


def embeddings_info(folder: Path) -> dict[str, Any]:
    """What an embeddings folder is: {"format": "parquet" | "clip-retrieval", "model": ... when known}."""
    info_file = folder / EXPORT_INFO
    if info_file.is_file():
        info: dict[str, Any] = json.loads(info_file.read_text())
        return info
    if any(folder.glob("shard-*.parquet")):
        return {"format": "parquet"}
    if (folder / "img_emb").is_dir() and (folder / "metadata").is_dir():
        return {"format": "clip-retrieval"}
    raise VecsearchError(
        f"{folder} holds neither vecsearch shards (shard-*.parquet) nor clip-retrieval output (img_emb/, metadata/)"
    )


@dataclass
class Row:
    root: str
    kind: str
    key: str
    size: int
    mtime_ns: int
    sha256: str
    captions: list[str]
    vector: np.ndarray | None
    caption_vectors: list[np.ndarray]


def import_embeddings(
    store: Store,
    vector_file: VectorFile,
    model: IndexModel,
    roots: RootPlanner,
    folder: Path,
    settings: CrawlSettings | None = None,
) -> CrawlReport:
    """Build (or update) the index from an embeddings folder, embedding nothing that it holds."""
    info = embeddings_info(folder)
    if info.get("fingerprint") and info["fingerprint"] != model.fingerprint:
        raise ModelMismatchError(
            f"{folder} holds vectors of another model ({info.get('model', {}).get('name', '?')}, fingerprint "
            f"{str(info['fingerprint'])[:12]}), not of this index's model ({model.spec})"
        )
    rows = list(_parquet_rows(folder) if info["format"] == "parquet" else _clip_retrieval_rows(folder))
    for row in rows:
        if row.vector is not None and row.vector.shape != (model.dim,):
            raise VecsearchError(
                f"{folder} holds {row.vector.shape[-1]}-dimensional vectors; this index's model makes {model.dim}"
            )
    sources = list(dict.fromkeys((row.root, row.kind) for row in rows))
    with store.transaction():
        scopes: list[Scope] = [roots.scope_for_source(root, kind) for root, kind in sources]
    root_ids = {source: scope.root.id for source, scope in zip(sources, scopes, strict=True)}
    walks = {root_id: WalkResult() for root_id in root_ids.values()}
    prefill = ShardPrefill()
    for row in rows:
        root_id = root_ids[(row.root, row.kind)]
        lines = tuple(clean_captions(row.captions))
        found = FoundFile(row.key, Path(row.root), row.size, row.mtime_ns, None, inline_signature(lines), lines)
        walks[root_id].files.append(found)
        prefill.files[(root_id, row.key)] = (row.size, row.mtime_ns, row.sha256, None)
        if row.vector is not None:
            prefill.images.setdefault(row.sha256, row.vector)
        for text, vector in zip(row.captions, row.caption_vectors, strict=False):
            prefill.texts.setdefault(text_hash(" ".join(text.split())), vector)
    crawler = Crawler(store, vector_file, model, roots, settings or CrawlSettings(), prefill=prefill)
    return crawler.run([], [], [], False, planned=(scopes, [walks[scope.root.id] for scope in scopes]))


def _normalised(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0:
        raise VecsearchError("the embeddings hold a zero or non-finite vector")
    return vector / norm


def _parquet_rows(folder: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq

    for path in sorted(folder.glob("shard-*.parquet")):
        for record in pq.read_table(path).to_pylist():
            if record.get("error"):
                continue
            vector = record.get("vector")
            yield Row(
                root=record["root"],
                kind=record.get("root_kind") or FOLDER,
                key=record["key"],
                size=int(record["size"]),
                mtime_ns=int(record["mtime_ns"]),
                sha256=record["sha256"],
                captions=list(record.get("captions") or []),
                vector=None if vector is None else np.asarray(vector, dtype=np.float32),
                caption_vectors=[np.asarray(v, dtype=np.float32) for v in record.get("caption_vectors") or []],
            )


def _clip_retrieval_rows(folder: Path) -> Iterator[Row]:
    """Rows of clip-retrieval's output. Its own files name a picture only by path or URL: those become
    the entries of a listing whose root is the embeddings folder; a vecsearch export adds its columns
    (root, key, size, mtime_ns, sha256, captions) and comes back as it was."""
    import pyarrow.parquet as pq

    for metadata_path in sorted((folder / "metadata").glob("metadata_*.parquet")):
        suffix = metadata_path.stem.split("_", 1)[1]
        images = np.load(folder / "img_emb" / f"img_emb_{suffix}.npy")
        text_file = folder / "text_emb" / f"text_emb_{suffix}.npy"
        texts = np.load(text_file) if text_file.exists() else None
        table = pq.read_table(metadata_path)
        records = table.to_pylist()
        if len(records) != len(images):
            raise VecsearchError(f"{metadata_path} has {len(records)} rows but its img_emb file {len(images)} vectors")
        for number, record in enumerate(records):
            where = record.get("image_path") or record.get("url") or record.get("key")
            if not isinstance(where, str):
                raise VecsearchError(f"{metadata_path}: row {number} names no image_path, url or key")
            caption = record.get("caption") or ""
            captions = list(record.get("captions") or ([caption] if caption else []))
            firsts = [_normalised(texts[number])] if texts is not None and caption and np.any(texts[number]) else []
            yield Row(
                root=record.get("root") or os.path.abspath(folder),
                kind=record.get("root_kind") or LISTING,
                key=record.get("key") if record.get("root") else where,
                size=int(record.get("size") or 0),
                mtime_ns=int(record.get("mtime_ns") or 0),
                sha256=record.get("sha256") or hashlib.sha256(where.encode()).hexdigest(),
                captions=captions,
                vector=_normalised(images[number]),
                caption_vectors=firsts,
            )
