"""Zero-shot tags for every picture: the index's image vectors classified against one label list.

`classify` asks about one picture; tagging asks the same question of the whole collection. The vectors
are already in the database, so no picture goes through the model again: each batch of stored image
vectors meets the label vectors in one matrix product, and the scores are `classify`'s own (the softmax
of the model's logit scale times the cosine, and the cosine). The best `top` labels of each picture are
kept with their scores.

The tag set (labels, prompt templates, how many labels are kept, the model's fingerprint, the label
vectors) and the tags live in the index's database, in tables of their own that this module creates.
Tags are keyed by image item: an item's vector never changes (a changed file becomes a new item), so a
tag stays right as long as its item exists; a picture a crawl removed leaves with its item (the tags of
items that are gone are never read, and are deleted at the next tagging). A crawl that adds pictures
tags them as they arrive; a new label list, other templates or another `top` re-tags everything.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .classify import check_templates, parse_labels
from .encoders.base import normalize_rows
from .errors import NotInIndexError, QueryError
from .results import LabelScore
from .roots import item_location
from .store import RootRow, Store

BATCH = 4096  # pictures per matrix product: 4096 × 1,000 labels of float32 is 16 MB
IN_CHUNK = 500  # ids per IN (...) list, under SQLite's limit on parameters
TABLES = (
    """CREATE TABLE IF NOT EXISTS tag_set (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        labels      TEXT NOT NULL,     -- JSON list, in the order given
        templates   TEXT NOT NULL,     -- JSON list of prompt templates
        top         INTEGER NOT NULL,  -- labels kept per picture
        fingerprint TEXT NOT NULL,     -- the model whose vectors the labels were embedded with
        logit_scale REAL NOT NULL,
        vectors     BLOB NOT NULL,     -- the label vectors, float32 little-endian, labels × dim
        created     REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS item_tags (
        item_id     INTEGER NOT NULL,  -- an image item
        rank        INTEGER NOT NULL,  -- 1: the most likely label
        label       INTEGER NOT NULL,  -- its position in tag_set.labels
        probability REAL NOT NULL,     -- softmax over the labels, as classify reports it
        score       REAL NOT NULL,     -- the cosine
        PRIMARY KEY (item_id, rank)
    )""",  # a rowid table: `check --repair` salvages tables by rowid
    "CREATE INDEX IF NOT EXISTS item_tags_label ON item_tags(label)",
)


@dataclass(frozen=True)
class TagSet:
    """The labels an index's pictures are tagged with, and how."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    top: int
    fingerprint: str
    logit_scale: float
    created: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TagReport:
    """What one tagging pass did."""

    labels: int = 0
    top: int = 1
    tagged: int = 0  # pictures tagged by this pass
    pictures: int = 0  # image items in the index
    retagged: bool = False  # a new tag set: every picture was tagged again
    reason: str | None = None  # why the pictures were tagged again
    seconds: float = 0.0
    label_seconds: float = 0.0  # embedding the labels (nothing when the tag set was unchanged)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TagRow:
    """One tag of one picture, as exported: a picture has up to `top` of them."""

    id: int
    path: str
    label: str
    rank: int
    probability: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_tables(store: Store) -> bool:
    row = store.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tag_set'").fetchone()
    return row is not None


def read_tag_set(store: Store) -> TagSet | None:
    """The index's tag set; None when its pictures were never tagged."""
    if not has_tables(store):
        return None
    row = store.conn.execute("SELECT labels, templates, top, fingerprint, logit_scale, created FROM tag_set").fetchone()
    if row is None:
        return None
    return TagSet(
        tuple(json.loads(row[0])), tuple(json.loads(row[1])), int(row[2]), str(row[3]), float(row[4]), float(row[5])
    )


def label_matrix(store: Store) -> np.ndarray:
    (blob,) = store.conn.execute("SELECT vectors FROM tag_set").fetchone()
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def settings_change(current: TagSet | None, labels: Sequence[str], templates: Sequence[str], top: int) -> str | None:
    """Why a tagging with these settings must re-tag every picture; None when it only catches up."""
    if current is None:
        return "new tag set"
    if tuple(labels) != current.labels:
        return "labels changed"
    if tuple(templates) != current.templates:
        return "templates changed"
    if top != current.top:
        return "top changed"
    return None


def check_top(top: object, labels: Sequence[str]) -> int:
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(labels):
        raise QueryError(f"top must be a whole number from 1 to the number of labels, {len(labels)} (got {top!r})")
    return top


def prepare(labels: str | Sequence[str], templates: Sequence[str], top: int) -> tuple[list[str], list[str], int]:
    """Labels, templates and top checked before any model loads."""
    names = parse_labels(labels)
    return names, check_templates(templates), check_top(top, names)


def replace_tag_set(
    store: Store,
    labels: Sequence[str],
    templates: Sequence[str],
    top: int,
    fingerprint: str,
    logit_scale: float,
    vectors: np.ndarray,
) -> None:
    """Record a new tag set and forget every tag of the old one, in one transaction."""
    with store.transaction():
        for statement in TABLES:
            store.conn.execute(statement)
        store.conn.execute("DELETE FROM item_tags")
        store.conn.execute("DELETE FROM tag_set")
        store.conn.execute(
            "INSERT INTO tag_set (id, labels, templates, top, fingerprint, logit_scale, vectors, created) "
            "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
            (
                json.dumps(list(labels), ensure_ascii=False),
                json.dumps(list(templates), ensure_ascii=False),
                top,
                fingerprint,
                float(logit_scale),
                np.ascontiguousarray(vectors, dtype="<f4").tobytes(),
                time.time(),
            ),
        )


def clear(store: Store) -> bool:
    """Forget the tag set and every tag; False when there was none."""
    if read_tag_set(store) is None:
        return False
    with store.transaction():
        store.conn.execute("DELETE FROM item_tags")
        store.conn.execute("DELETE FROM tag_set")
    return True


def forget_removed(store: Store) -> None:
    """Delete the tags of items that are gone (a crawl removed their pictures)."""
    with store.transaction():
        store.conn.execute("DELETE FROM item_tags WHERE item_id NOT IN (SELECT id FROM items)")


def untagged_count(store: Store) -> int:
    (count,) = store.conn.execute(
        "SELECT COUNT(*) FROM items i WHERE i.kind = 'image' "
        "AND NOT EXISTS (SELECT 1 FROM item_tags t WHERE t.item_id = i.id)"
    ).fetchone()
    return int(count)


def _untagged_vectors(store: Store, after: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    rows = store.conn.execute(
        "SELECT i.id, v.data FROM items i JOIN vectors v ON v.item_id = i.id "
        "WHERE i.kind = 'image' AND i.id > ? AND NOT EXISTS (SELECT 1 FROM item_tags t WHERE t.item_id = i.id) "
        "ORDER BY i.id LIMIT ?",
        (after, limit),
    ).fetchall()
    ids = np.array([int(r[0]) for r in rows], dtype=np.int64)
    if not rows:
        return ids, np.zeros((0, 0), np.float32)
    return ids, np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype="<f4").reshape(len(rows), -1)


def top_labels(
    vectors: np.ndarray, labels: np.ndarray, logit_scale: float, top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each picture (a row of `vectors`) its `top` labels, most likely first: (label positions,
    probabilities, cosines), each pictures × top. One matrix product for the whole batch; the numbers
    are `classify_vector`'s for each row (the softmax of the logit scale times the cosine). Besides the
    pictures × labels scores, which the softmax reuses in place, only the kept labels take memory."""
    scores = normalize_rows(np.asarray(vectors, dtype=np.float32)) @ labels.T
    count = scores.shape[1]
    # The probabilities rank the labels as the cosines do: the labels kept are those of the largest cosines.
    partition = np.argpartition(scores, count - top, axis=1)[:, count - top :] if top > 1 else None
    best = scores.argmax(axis=1)[:, None] if partition is None else partition
    kept = np.take_along_axis(scores, best, axis=1)
    order = np.lexsort((best, -kept), axis=1)  # most likely first; a tie goes to the earlier label
    best, kept = np.take_along_axis(best, order, axis=1), np.take_along_axis(kept, order, axis=1)
    highest = scores.max(axis=1, keepdims=True)
    np.subtract(scores, highest, out=scores)
    np.multiply(scores, logit_scale, out=scores)
    np.exp(scores, out=scores)
    probabilities = np.exp(logit_scale * (kept - highest)) / scores.sum(axis=1, keepdims=True)
    return best, probabilities, kept


def tag_untagged(store: Store, tag_set: TagSet, progress: Callable[[int], None] | None = None) -> int:
    """Tag every image item that has no tags yet with the recorded tag set; returns how many. Each batch
    commits on its own, so an interrupted pass keeps what it did and the next one goes on from there."""
    labels = label_matrix(store).reshape(len(tag_set.labels), -1)
    done, after = 0, -1
    while True:
        with store.snapshot():
            ids, vectors = _untagged_vectors(store, after, BATCH)
        if len(ids) == 0:
            return done
        best, probabilities, scores = top_labels(vectors, labels, tag_set.logit_scale, tag_set.top)
        ranks = np.arange(1, best.shape[1] + 1)
        rows = zip(
            np.repeat(ids, best.shape[1]).tolist(),
            np.tile(ranks, len(ids)).tolist(),
            best.reshape(-1).tolist(),
            probabilities.reshape(-1).astype(float).tolist(),
            scores.reshape(-1).astype(float).tolist(),
            strict=True,
        )
        with store.transaction():
            store.conn.executemany(
                "INSERT OR REPLACE INTO item_tags (item_id, rank, label, probability, score) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        done += len(ids)
        after = int(ids[-1])
        if progress is not None:
            progress(len(ids))


def counts(store: Store) -> dict[str, int]:
    """Pictures carrying each label (among their kept labels), in the tag set's order; {} without tags."""
    tag_set = read_tag_set(store)
    if tag_set is None:
        return {}
    found = dict(
        store.conn.execute(
            "SELECT t.label, COUNT(*) FROM item_tags t JOIN items i ON i.id = t.item_id GROUP BY t.label"
        ).fetchall()
    )
    return {label: int(found.get(position, 0)) for position, label in enumerate(tag_set.labels)}


def tagged_count(store: Store) -> int:
    if not has_tables(store):
        return 0
    (count,) = store.conn.execute(
        "SELECT COUNT(DISTINCT t.item_id) FROM item_tags t JOIN items i ON i.id = t.item_id"
    ).fetchone()
    return int(count)


def tags_of(store: Store, item_ids: Iterable[int]) -> dict[int, tuple[LabelScore, ...]]:
    """The kept labels of these image items, most likely first; items without tags are left out."""
    wanted = sorted({int(i) for i in item_ids})
    if not wanted or not has_tables(store):
        return {}
    row = store.conn.execute("SELECT labels FROM tag_set").fetchone()
    if row is None:
        return {}
    names = json.loads(row[0])
    found: dict[int, list[tuple[int, LabelScore]]] = {}
    for start in range(0, len(wanted), IN_CHUNK):
        part = wanted[start : start + IN_CHUNK]
        for item_id, rank, label, probability, score in store.conn.execute(
            "SELECT item_id, rank, label, probability, score FROM item_tags "
            f"WHERE item_id IN ({','.join('?' * len(part))})",
            part,
        ):
            found.setdefault(int(item_id), []).append((rank, LabelScore(names[label], probability, score)))
    return {item_id: tuple(tag for _, tag in sorted(rows, key=lambda r: r[0])) for item_id, rows in found.items()}


def resolve_label(tag_set: TagSet | None, label: str, index_name: str) -> int:
    """The position of a label in the tag set, as users type it (spaces and case aside)."""
    if tag_set is None:
        raise NotInIndexError(f"index {index_name} has no tags to filter by: its pictures were never tagged")
    wanted = " ".join(str(label).split())
    if wanted in tag_set.labels:
        return tag_set.labels.index(wanted)
    folded = [i for i, known in enumerate(tag_set.labels) if known.casefold() == wanted.casefold()]
    if len(folded) == 1:
        return folded[0]
    more = len(tag_set.labels) - 12
    shown = ", ".join(tag_set.labels[:12]) + (f" and {more} more" if more > 0 else "")
    raise NotInIndexError(f"no tag '{label}' in index {index_name}; its tags are {shown}")


def tagged_files(store: Store, label: str, index_name: str) -> list[int]:
    """The files whose picture carries this tag: the allowed set of a `tag` filter."""
    position = resolve_label(read_tag_set(store), label, index_name)
    rows = store.conn.execute(
        "SELECT DISTINCT i.file_id FROM item_tags t JOIN items i ON i.id = t.item_id WHERE t.label = ?", (position,)
    )
    return sorted(int(r[0]) for r in rows)


def rows(store: Store, root_path: Callable[[RootRow], Path], chunk: int = 10_000) -> Iterator[TagRow]:
    """Every tag of every picture, by picture (in item order) and rank, with the picture's path now."""
    tag_set = read_tag_set(store)
    if tag_set is None:
        return
    roots = {root.id: (root, root_path(root)) for root in store.roots()}
    after = -1
    while True:
        with store.snapshot():
            found = store.conn.execute(
                "SELECT t.item_id, t.rank, t.label, t.probability, t.score, f.root_id, f.relpath "
                "FROM item_tags t JOIN items i ON i.id = t.item_id JOIN files f ON f.id = i.file_id "
                "WHERE t.item_id > ? AND t.item_id IN (SELECT item_id FROM item_tags WHERE item_id > ? "
                "ORDER BY item_id LIMIT ?) ORDER BY t.item_id, t.rank",
                (after, after, chunk),
            ).fetchall()
        if not found:
            return
        for item_id, rank, label, probability, score, root_id, relpath in found:
            root, where = roots[int(root_id)]
            path = item_location(root, where, relpath)
            yield TagRow(int(item_id), path, tag_set.labels[label], int(rank), float(probability), float(score))
        after = int(found[-1][0])
