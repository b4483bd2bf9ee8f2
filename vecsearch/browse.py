"""Browsing the collection: its pictures a page at a time, shuffled, newest first or by path.

A search page with nothing typed yet shows the collection instead of a blank area, and lets one page
through it. The shuffle is a permutation keyed by a seed: each picture's id goes through a bijective
32-bit mix (multiply by an odd number, xor-shift, multiply again), computed by SQLite in the query that
picks the page, so SQLite keeps only the rows up to the page's end and Python never holds or sorts the
whole collection (27 ms for a first page of 24 among 100,000 pictures, docs/benchmarks.md). Ties (ids 2**32 apart) fall back to
the id, so the order is total: paging through it with one seed shows every picture exactly once while the
collection stays as it is, and a picture a crawl adds takes one place without moving the others.
"""

from __future__ import annotations

from collections.abc import Callable

from .errors import QueryError
from .query import MAX_ITEM_ID
from .results import Caption, Item, PicturePage
from .retrieval import MAX_K
from .store import Store

ORDERS = ("random", "newest", "path")
MAX_SEED = 2**32 - 1
IN_CHUNK = 500  # ids per IN (...) list, under SQLite's limit on parameters

_MASK = 0xFFFFFFFF


def _xor(a: str, b: str) -> str:
    """SQL for a ^ b: SQLite has no xor operator."""
    return f"(({a} | {b}) - ({a} & {b}))"


def shuffle_key(column: str) -> str:
    """SQL for a bijective mix of the low 32 bits of `column`, keyed by the `:seed` parameter. Every
    product stays under 2**63, so SQLite keeps integers (it would turn an overflow into a float)."""
    mixed = f"((({column} & {_MASK}) * 1103515245 + :seed) & {_MASK})"
    mixed = _xor(mixed, f"({mixed} >> 15)")
    return f"(({mixed} * 739062733) & {_MASK})"


_ORDER_BY = {
    "random": f"{shuffle_key('i.id')}, i.id",
    "newest": "f.mtime_ns DESC, i.id DESC",
    "path": "r.path, f.relpath, i.id",
}


def check_request(limit: int, offset: int, order: str, seed: int) -> None:
    if order not in ORDERS:
        raise QueryError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_K:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_K:,}, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= MAX_ITEM_ID:
        raise QueryError(f"offset must be a whole number from 0 up, not {offset!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise QueryError(f"seed must be a whole number from 0 to {MAX_SEED}, not {seed!r}")


def picture_page(
    store: Store, limit: int, offset: int, order: str, seed: int, locate: Callable[[int, str], str]
) -> PicturePage:
    """One page of the pictures (image items) in `order`; `locate` makes (root id, relpath) a path.
    The caller holds a snapshot, so the page and the total agree."""
    check_request(limit, offset, order, seed)
    tables = "items i JOIN files f ON f.id = i.file_id JOIN roots r ON r.id = f.root_id"
    if order == "random":
        tables = "items i"  # the shuffle needs nothing but the id: the kind index covers it
    sql = f"SELECT i.id FROM {tables} WHERE i.kind = 'image' ORDER BY {_ORDER_BY[order]} LIMIT :limit OFFSET :offset"
    ids = [int(row[0]) for row in store.conn.execute(sql, {"seed": seed, "limit": limit, "offset": offset})]
    total = int(store.conn.execute("SELECT COUNT(*) FROM items WHERE kind = 'image'").fetchone()[0])
    files: dict[int, tuple[int, int, str, int, int, str]] = {}
    for chunk in _chunks(ids):
        sql = (
            "SELECT i.id, i.file_id, f.root_id, f.relpath, f.size, f.mtime_ns, f.sha256 FROM items i"
            f" JOIN files f ON f.id = i.file_id WHERE i.id IN ({','.join('?' * len(chunk))})"
        )
        for row in store.conn.execute(sql, chunk):
            files[int(row[0])] = (int(row[1]), int(row[2]), row[3], int(row[4]), int(row[5]), row[6])
    captions: dict[int, list[Caption]] = {}
    for chunk in _chunks(sorted({file[0] for file in files.values()})):
        sql = (
            "SELECT id, file_id, text, source, lang FROM items WHERE kind = 'caption'"
            f" AND file_id IN ({','.join('?' * len(chunk))}) ORDER BY file_id, position, id"
        )
        for row in store.conn.execute(sql, chunk):
            captions.setdefault(int(row[1]), []).append(Caption(int(row[0]), row[2], row[3], row[4]))
    items = []
    for item_id in ids:
        file_id, root_id, relpath, size, mtime_ns, sha256 = files[item_id]
        items.append(
            Item(
                id=item_id,
                kind="image",
                path=locate(root_id, relpath),
                relpath=relpath,
                text=None,
                image=item_id,
                captions=tuple(captions.get(file_id, ())),
                bytes=size,
                mtime_ns=mtime_ns,
                sha256=sha256,
            )
        )
    return PicturePage(items=tuple(items), total=total, offset=offset, order=order, seed=seed)


def _chunks(values: list[int]) -> list[list[int]]:
    return [values[start : start + IN_CHUNK] for start in range(0, len(values), IN_CHUNK)]
