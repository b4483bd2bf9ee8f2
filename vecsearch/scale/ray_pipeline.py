"""The Ray Data part of a distributed crawl: reading, hashing and decoding run as CPU tasks with the
crawler's per-file rules (one bad file costs one row, with its reason); the model runs in an actor pool,
loaded once per actor. The driver gathers rows into their shards and writes each shard when it is whole.

Ray is imported here only, inside functions: `import vecsearch` never needs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import faults
from ..crawl import FoundFile, read_sidecar
from ..errors import VecsearchError
from ..pipeline import Pending, decode, hash_pending, prepare_item
from ..roots import FOLDER, LISTING
from ..sidecars import DEFAULT_LANGUAGES
from .geometry import shrink
from .shards import ShardFolder
from .sources import read_entry

log = logging.getLogger(__name__)
INSTALL_HINT = "the Ray engine needs Ray Data: pip install 'vecsearch[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """How a distributed crawl uses Ray.

    `address`: None starts Ray on this machine; "auto" or "ray://host:10001" joins a cluster.
    `actors`: model replicas (default: one per GPU, else one per 8 CPUs, at least one).
    `actor_cpus`: CPUs each replica reserves (default 1 with a GPU, else half of a CPU so that the read
    tasks always find a slot: ray #44687). `read_cpus`: CPUs each read-and-decode task reserves (half: two
    decode on a core while the model actor's threads wait for their batches, measured faster than one
    task per core on 2 cores; scripts/bench_ray.py). `shard_size`: inputs per shard. `attempts`: how often the
    unfinished shards are run again after Ray gave up on them (a node lost mid-job, say).
    """

    address: str | None = None
    actors: int | None = None
    actor_cpus: float | None = None
    gpus_per_actor: float | None = None
    read_cpus: float = 0.5
    shard_size: int = 1000
    attempts: int = 3
    num_cpus: int | None = None  # of a Ray started here (default: all of this machine's)
    # No row for this long: stop, and say why. Ray waits silently (no error) when a lost node leaves too
    # few CPUs for the model's actors and the read tasks together.
    stall_seconds: float = 900.0


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise VecsearchError(INSTALL_HINT) from exc
    return ray


def connect(options: RayOptions) -> bool:
    """Start Ray here or join the cluster at `options.address`; True when this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        quiet_ray_data()
        return False
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if options.address:
        kwargs["address"] = options.address
    else:
        # "local" always starts a new Ray here: a plain init would join whatever cluster a file left by an
        # earlier `ray start` (or a killed one) names.
        kwargs["address"] = "local"
        # A Ray started here keeps its token authentication; its notice about it on every run goes.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        if options.num_cpus:
            kwargs["num_cpus"] = options.num_cpus
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise VecsearchError(f"cannot reach the Ray cluster at {options.address or 'this machine'}: {exc}") from exc
    quiet_ray_data()
    return True


def quiet_ray_data() -> None:
    """The driver shows one bar over all inputs; Ray Data's own bars and execution logs go."""
    ray = import_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


def pool_shape(options: RayOptions) -> tuple[int, float, float]:
    """(actors, CPUs per actor, GPUs per actor) for this cluster."""
    ray = import_ray()
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = float(resources.get("CPU", 1))
    per_gpu = options.gpus_per_actor if options.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    if per_gpu and not gpus:
        raise VecsearchError("--gpus-per-actor asks for GPUs, but the Ray cluster has none")
    actors = options.actors or (max(1, int(gpus / per_gpu)) if per_gpu else max(1, int(cpus // 8)))
    actor_cpus = options.actor_cpus if options.actor_cpus is not None else (1.0 if per_gpu else 0.5)
    if actors * actor_cpus >= cpus:
        raise VecsearchError(
            f"{actors} model actors of {actor_cpus} CPUs would hold all {cpus:g} CPUs of the cluster and leave "
            "none to read pictures; give fewer --actors or a smaller --actor-cpus"
        )
    return actors, actor_cpus, per_gpu


# --- the stages ---------------------------------------------------------------------------------------

_known_cache: dict[str, np.ndarray] = {}


def read_and_decode(
    batch: Any,
    known: list[Any],
    min_size: int | None,
    max_megapixels: float,
    images: bool,
    geometry: tuple[int, int, int, int] | None = None,
    languages: tuple[str, ...] = DEFAULT_LANGUAGES,
) -> Any:
    """Read task: hash each input, decode it unless the index knows its content already, and read its
    caption sidecar (the lines in `languages`). Each failure becomes the row's `error`, in the local crawler's words. With the
    model's `geometry`, the picture is also resized and cropped here, as its preprocess would."""
    import pyarrow as pa

    known_hashes = _known_hashes(known[0])
    out: dict[str, list[Any]] = {name: [] for name in _DECODED}
    for row in batch.to_pylist():
        found = FoundFile(row["key"], Path(row["root"]), row["size"], row["mtime_ns"], row["sidecar"] or None)
        item = Pending(row["root_id"], found, None)
        if row["kind"] == FOLDER:
            hash_pending(item)
        else:
            try:
                item.data = read_entry(row["kind"], row["root"], row["key"], row["offset"], row["size"])
                item.sha256 = hashlib.sha256(item.data).hexdigest()
            except OSError as exc:
                item.error = f"cannot read file ({exc.strerror or exc})"
        pixels, height, width, skip_model = b"", 0, 0, item.error is not None or not images
        if not skip_model and _is_known(item.sha256, known_hashes):
            skip_model = True  # a rename or a copy of an indexed picture: the crawl reuses its vector
        if not skip_model:
            decode(item, None, max_megapixels, min_size)
            if item.prepared is not None:
                picture = item.prepared.convert("RGB")
                array = np.asarray(shrink(picture, geometry) if geometry else picture, dtype=np.uint8)
                height, width = array.shape[:2]
                pixels = array.tobytes()
        captions = list(row["captions"] or [])
        if row["kind"] == FOLDER and found.sidecar is not None:
            captions = [c.text for c in read_sidecar(found.sidecar, languages)[0]]  # refusals: the commit says
        out["id"].append(row["id"])
        out["shard"].append(row["shard"])
        out["root_id"].append(row["root_id"])
        out["root"].append(row["root"])
        out["key"].append(row["key"])
        out["size"].append(item.found.size)
        out["mtime_ns"].append(item.found.mtime_ns)
        out["sha256"].append(item.sha256)
        out["error"].append(item.error)
        out["pixels"].append(pixels)
        out["height"].append(height)
        out["width"].append(width)
        out["captions"].append(captions)
    return pa.table(out, schema=_decoded_schema())


_DECODED = (
    "id",
    "shard",
    "root_id",
    "root",
    "key",
    "size",
    "mtime_ns",
    "sha256",
    "error",
    "pixels",
    "height",
    "width",
    "captions",
)


def _decoded_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.int64()),
            ("shard", pa.int64()),
            ("root_id", pa.int64()),
            ("root", pa.string()),
            ("key", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("sha256", pa.string()),
            ("error", pa.string()),
            ("pixels", pa.large_binary()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("captions", pa.list_(pa.string())),
        ]
    )


def _known_hashes(ref: Any) -> np.ndarray:
    key = str(ref)
    if key not in _known_cache:
        import ray

        _known_cache.clear()
        _known_cache[key] = ray.get(ref)
    return _known_cache[key]


def _is_known(sha256: str, known: np.ndarray) -> bool:
    if not sha256 or not len(known):
        return False
    prefix = np.uint64(int(sha256[:16], 16))
    at = int(np.searchsorted(known, prefix))
    return at < len(known) and known[at] == prefix


def hash_prefixes(hashes: list[str]) -> np.ndarray:
    """The first 64 bits of each known content hash, sorted: 8 bytes a file to ship to every read task.
    A false match only means that the commit embeds that one picture itself."""
    return np.unique(np.array([int(h[:16], 16) for h in hashes if h], dtype=np.uint64))


class Embedder:
    """An actor of the model pool: loads the index's model once, embeds pictures and captions."""

    def __init__(self, load: Callable[[], Any], batch_size: int) -> None:
        self.encoder = load()
        self.batch_size = batch_size

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa
        from PIL import Image

        faults.point("ray-embed")
        rows = batch.to_pylist()
        prepared: list[tuple[int, Any]] = []
        for number, row in enumerate(rows):
            if row["pixels"]:
                picture = Image.frombuffer("RGB", (row["width"], row["height"]), row["pixels"], "raw", "RGB", 0, 1)
                item = Pending(0, None, None, prepared=picture, raw=True)  # type: ignore[arg-type]
                prepare_item(item, self.encoder.prepare_image)
                if item.error:
                    row["error"] = item.error
                else:
                    prepared.append((number, item.prepared))
        vectors: list[bytes] = [b""] * len(rows)
        for start in range(0, len(prepared), self.batch_size):
            part = prepared[start : start + self.batch_size]
            embedded = self.encoder.embed_prepared_images([p for _, p in part])
            for (number, _), vector in zip(part, embedded, strict=True):
                vectors[number] = np.asarray(vector, dtype="<f4").tobytes()
        texts = sorted({text for row in rows if not row["error"] for text in row["captions"]})
        text_vectors: dict[str, bytes] = {}
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            for text, text_vector in zip(chunk, self.encoder.embed_texts(chunk), strict=True):
                text_vectors[text] = np.asarray(text_vector, dtype="<f4").tobytes()
        out = {name: [row[name] for row in rows] for name in _DECODED if name not in ("pixels", "height", "width")}
        out["vector"] = vectors
        inference = getattr(self.encoder, "inference", None)  # the mode this actor settled on, and its check
        decided = inference is not None and (inference.checks or getattr(inference, "remembered", False))
        settled = json.dumps(inference.describe()) if decided and inference is not None else None
        out["inference"] = [settled] * len(rows)
        out["caption_vectors"] = [
            b"".join(text_vectors.get(t, b"") for t in row["captions"]) if not row["error"] else b"" for row in rows
        ]
        return pa.table(out)


# --- the driver ---------------------------------------------------------------------------------------


def run_shards(
    plan: dict[int, list[dict[str, Any]]],
    shards: ShardFolder,
    load: Callable[[], Any],
    options: RayOptions,
    *,
    known: np.ndarray,
    min_size: int | None,
    max_megapixels: float,
    images: bool,
    languages: tuple[str, ...],
    batch_size: int,
    geometry: tuple[int, int, int, int] | None,
    on_rows: Callable[[int, int], None],
    inference: dict[str, Any],
    timing: dict[str, float] | None = None,
) -> tuple[int, int]:
    """Embed the planned shards on Ray and write each one when it is whole; returns how many pictures
    the model embedded, and how many times Ray ran; `inference` receives the inference mode the first model
    actor settled on, with its check against fp32; `timing` the seconds until the first row came back (actors
    started, model loaded, first batch embedded) and the rows a second after that. Shards Ray gave up on (a node lost with its work) run again, up to
    `options.attempts` times in all; those that still fail are left for the next run of the command."""
    ray = import_ray()
    import pyarrow as pa

    actors, actor_cpus, gpus = pool_shape(options)
    known_ref = ray.put(known)
    embedded = 0
    pending = dict(plan)
    gathered: dict[int, dict[int, dict[str, Any]]] = {}
    failure: BaseException | None = None
    attempts = 0
    inference.clear()
    started, first_row, rows_after = time.monotonic(), 0.0, 0
    for attempt in range(max(1, options.attempts)):
        if not pending:
            break
        attempts += 1
        # One block per model batch, never across shards: the read tasks work in parallel even on a small
        # job, and rows stream back a batch at a time (one block is the unit Ray hands back).
        blocks = [
            pa.Table.from_pylist(pending[number][start : start + batch_size])
            for number in sorted(pending)
            for start in range(0, len(pending[number]), batch_size)
        ]
        dataset = ray.data.from_arrow(blocks)
        dataset = dataset.map_batches(
            read_and_decode,
            batch_format="pyarrow",
            batch_size=None,
            num_cpus=options.read_cpus,
            fn_kwargs={
                "known": [known_ref],
                "min_size": min_size,
                "max_megapixels": max_megapixels,
                "images": images,
                "geometry": geometry,
                "languages": languages,
            },
        )
        with warnings.catch_warnings():
            # Limits on actor restarts and task retries can only be passed through the deprecated
            # ray_remote_args (Ray's default is to retry forever, which turns a model that cannot load into
            # a hang); the deprecation warning says nothing the user can act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            dataset = dataset.map_batches(
                Embedder,
                fn_constructor_kwargs={"load": load, "batch_size": batch_size},
                batch_format="pyarrow",
                batch_size=batch_size,
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=actor_cpus,
                num_gpus=gpus or None,
                max_restarts=3,
                max_task_retries=3,
            )
        try:
            for batch in _watched(dataset, options.stall_seconds):
                for row in batch.to_pylist():
                    number = row.pop("shard")
                    settled = row.pop("inference")
                    if settled and not inference:
                        inference.update(json.loads(settled))
                    if number not in pending or row["id"] in gathered.setdefault(number, {}):
                        continue
                    gathered[number][row["id"]] = row
                    if not first_row:
                        first_row = time.monotonic()
                    else:
                        rows_after += 1
                    on_rows(1, 0 if row["error"] is None else 1)
                    if len(gathered[number]) == len(pending[number]):
                        kinds = {r["id"]: r["kind"] for r in pending[number]}
                        embedded += _finish(shards, number, gathered.pop(number), kinds)
                        del pending[number]
        except Stalled as exc:
            raise VecsearchError(
                f"no picture came back from Ray for {options.stall_seconds:g} s: the cluster lacks CPUs (or GPUs) "
                "for the model actors and the read tasks together, perhaps since a node was lost; "
                f"{len(shards.finished())} finished shards are kept: add nodes and run the same command again"
            ) from exc
        except Exception as exc:  # Ray gave up on some work: run what is unfinished again
            failure = exc
            log.warning("Ray stopped (attempt %d of %d): %s", attempt + 1, options.attempts, exc)
            for number in list(gathered):
                on_rows(-len(gathered[number]), 0)
            gathered.clear()
    if timing is not None and first_row:
        timing["first_row_seconds"] = round(first_row - started, 3)
        after = time.monotonic() - first_row
        timing["rows_per_second_after_first"] = round(rows_after / after, 3) if after > 0 else 0.0
    if pending:
        raise VecsearchError(
            f"{len(pending)} shards did not finish after {options.attempts} attempts ({failure}); the finished "
            "ones are kept: run the same command again to continue"
        )
    return embedded, attempts


class Stalled(Exception):
    pass


def _watched(dataset: Any, stall_seconds: float) -> Iterator[Any]:
    """The dataset's output batches, read on a thread of their own so that waiting can time out (and
    Ctrl-C reaches the driver at once)."""
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=4)

    def pump() -> None:
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                handoff.put(("batch", batch))
            handoff.put(("end", None))
        except BaseException as exc:  # handed to the driver's thread, which raises it
            handoff.put(("error", exc))

    threading.Thread(target=pump, name="vecsearch-ray-output", daemon=True).start()
    while True:
        try:
            kind, value = handoff.get(timeout=stall_seconds)
        except queue.Empty:
            raise Stalled() from None
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


def _finish(shards: ShardFolder, number: int, rows: dict[int, dict[str, Any]], kinds: dict[int, str]) -> int:
    dim = shards.dim
    records = []
    embedded = 0
    for row_id in sorted(rows):
        row = rows[row_id]
        row["root_kind"] = kind = kinds[row_id]
        row["path"] = (
            str(Path(row["root"]) / row["key"])
            if kind == FOLDER
            else row["key"]
            if kind == LISTING
            else row["root"].rstrip("/") + "/" + row["key"]
        )
        vector = row.pop("vector")
        row["vector"] = np.frombuffer(vector, dtype="<f4").tolist() if vector else None
        embedded += bool(vector)
        flat = np.frombuffer(row.pop("caption_vectors") or b"", dtype="<f4")
        row["caption_vectors"] = flat.reshape(-1, dim).tolist() if len(flat) else None
        records.append(row)
    shards.write(number, records)
    faults.point("shard-written")
    return embedded
