"""vecsearch: a prompt is a search query into a model's latent space.

Crawl folders of images and captions into an index (`Index.create(...).add(folder)`), then search it
with text, images or both (`index.search("a red apple")`), describe an image with the nearest captions,
or classify it zero-shot. Nothing heavy happens at import: models load when something needs embedding.
"""

from __future__ import annotations

import logging

from .check import CheckReport, Finding, check_index  # noqa: E402
from .classify import DEFAULT_TEMPLATES  # noqa: E402
from .classify import classify_image as classify
from .duplicates import DEFAULT_THRESHOLDS as DUPLICATE_THRESHOLDS  # noqa: E402
from .duplicates import DuplicateGroup, DuplicateReport  # noqa: E402
from .encoders import (  # noqa: E402
    DEFAULT_MODEL,
    STARTER_MODEL,
    Encoder,
    ModelInfo,
    ModelSpec,
    list_models,
    load_encoder,
    load_query_encoder,
)
from .errors import (  # noqa: E402
    CancelledQueryError,
    CaptionsFileError,
    ImageError,
    IndexCorruptError,
    IndexExistsError,
    IndexLockedError,
    IndexNotFoundError,
    ModelError,
    ModelMismatchError,
    ModelNotFoundError,
    ModelUnavailableError,
    NotInIndexError,
    QueryError,
    UnsupportedModalityError,
    VecsearchError,
)
from .home import IndexSummary, list_indexes  # noqa: E402
from .index import Index  # noqa: E402
from .indexer import IndexingInterrupted  # noqa: E402
from .plan import INDEX_TYPES, STORAGES, BudgetError  # noqa: E402
from .query import Query, Term  # noqa: E402
from .results import Caption, CrawlReport, Hit, Item, LabelScore, PicturePage, SkippedFile  # noqa: E402
from .retrieval import KINDS, MAX_K  # noqa: E402
from .scale.exchange import ExportReport, embeddings_info  # noqa: E402
from .scale.job import ListingColumns, RayOptions  # noqa: E402
from .scale.sources import parse_source  # noqa: E402
from .tags import TagReport, TagRow, TagSet  # noqa: E402
from .version import __version__  # noqa: E402

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_TEMPLATES",
    "DUPLICATE_THRESHOLDS",
    "Caption",
    "BudgetError",
    "CancelledQueryError",
    "CaptionsFileError",
    "CheckReport",
    "CrawlReport",
    "DuplicateGroup",
    "DuplicateReport",
    "Encoder",
    "ExportReport",
    "Finding",
    "Hit",
    "INDEX_TYPES",
    "ImageError",
    "Index",
    "IndexCorruptError",
    "IndexExistsError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexSummary",
    "IndexingInterrupted",
    "Item",
    "KINDS",
    "LabelScore",
    "ListingColumns",
    "MAX_K",
    "ModelError",
    "ModelInfo",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ModelSpec",
    "ModelUnavailableError",
    "PicturePage",
    "NotInIndexError",
    "Query",
    "QueryError",
    "RayOptions",
    "STARTER_MODEL",
    "STORAGES",
    "SkippedFile",
    "TagReport",
    "TagRow",
    "TagSet",
    "Term",
    "UnsupportedModalityError",
    "VecsearchError",
    "__version__",
    "check_index",
    "classify",
    "embeddings_info",
    "list_indexes",
    "list_models",
    "load_encoder",
    "load_query_encoder",
    "parse_source",
]
