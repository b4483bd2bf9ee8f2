"""Text queries without torch: an open_clip text tower exported once to ONNX, with a tokenizer that needs
no torch, cached by the weights' fingerprint.

A cold text search used to spend most of its time importing torch, torchvision, open_clip and
transformers, and loading an image tower it never runs. When a crawl has the full model loaded anyway,
`export_text_tower` writes the text tower as an fp32 ONNX graph (optimised by ONNX Runtime once; its
weights in a file beside it, which ONNX Runtime maps instead of copying) plus a Hugging Face
`tokenizers` tokenizer that reproduces the model's own: open_clip's CLIP BPE, or the fast tokenizer of a
Hugging Face text tower. A later process gets an encoder built from those files by `load_text_encoder`
(text_onnx.py), with ONNX Runtime, `tokenizers`, ftfy and regex only.

Nothing is written unless it is exact: token ids must equal the model's tokenizer on a corpus of awkward
texts, and the vectors must have a cosine of at least COSINE_BAR with torch's `encode_text`. The files
are made in a temporary folder and renamed into place, the small JSON meta last; it records each
file's size and SHA-256, and a reader checks them all before it runs anything, so a partial, damaged or
foreign export is never used (the caller loads the full model instead). Set VECSEARCH_TEXT_ONNX=0 to
neither write nor use exports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import first_line
from .base import normalize_rows
from .text_onnx import (
    CLIP_BPE,
    HF,
    ExportFile,
    ExportInfo,
    OnnxTextEncoder,
    TextExportError,
    cache_folder,
    clip_split_pattern,
    disabled,
    meta_path,
    sha256_file,
    token_ids,
)

COSINE_BAR = 0.99999
STALE_SECONDS = 24 * 3600  # leftovers of an export that died are removed after this long
log = logging.getLogger(__name__)

# What the tokenizers must agree on, token for token: plain prompts, case, punctuation, numbers,
# accents, other scripts, emoji, mojibake and HTML entities (both cleaned by ftfy / html.unescape),
# odd whitespace, contractions, the special tokens' own spellings (where open_clip does and does not
# take them as special), and texts that get truncated.
TOKEN_CORPUS: tuple[str, ...] = (
    "",
    " ",
    "a red apple",
    "A photo of a dog.",
    "  two   spaces\tand a tab\nand a newline  ",
    "it's, they're, we'll, I'd, you've, I'm, don't, O'Reilly's",
    "Numbers: 3.14159, 1,000,000, 2024-11-23, 42nd, #1, 100%",
    "café naïve façade jalapeño Ångström Øresund straße",
    "ÉCOLE NORMALE SUPÉRIEURE İstanbul",
    "Привет мир, Ελληνικά, עברית, العربية, हिन्दी, 日本語の文章, 中文字符, 한국어",
    "emoji 🍎🐶🚗 👩‍👩‍👧 🇫🇷 ❤️ ✨",
    "mojibake: The Mona Lisa doesnâ€™t have eyebrows. Ã©tÃ© cafÃ©",
    "entities: Tom &amp; Jerry &lt;3 &quot;quoted&quot; &#39;single&#39; &amp;amp; &eacute;t&eacute;",
    "zero\u200bwidth\u00a0nbsp\u2003em-space\u3000ideographic\x85next-line",
    "ﬁne ligatures, full-width ＡＢＣ１２３, circled ①②, superscript x²",
    "<start_of_text> <end_of_text> <|startoftext|> <|endoftext|> [CLS] [SEP] [PAD] [UNK] [MASK]",
    "a;<end_of_text> !<start_of_text> x<end_of_text>y",
    "under_score snake_case kebab-case CamelCase email@example.com https://example.com/a?b=c",
    "'quoted' \"double\" (paren) [bracket] {brace} <angle> ... !!! ??? --- ~~~ ^^^",
    "x" * 300,
    " ".join(["word"] * 120),
    " ".join(f"token{i} café 🍎 &amp;" for i in range(60)),
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
)
# Prompts whose vectors must match torch's: short and long (so padding differs within the batch),
# and one that is truncated.
VECTOR_PROMPTS: tuple[str, ...] = (
    "a red apple",
    "a photo of a dog playing in the snow",
    "café 🍎 &amp; naïve",
    "",
    "an oil painting of a lighthouse on a rocky coast at sunset, with waves crashing against the rocks",
    " ".join(["a very long prompt"] * 40),
)


# --- making an export --------------------------------------------------------------------------

# Exports this process made or checked, by fingerprint: another cache folder gets a copy of the files
# instead of a new export (one process crawling several indexes, or a test suite with many caches).
_made: dict[str, Path] = {}


def export_text_tower(encoder: Any, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Export an open_clip model's text tower for torch-free text queries, unless a valid export of
    these weights is cached already. Returns a sentence for the crawl's report when it wrote one, None
    otherwise; never raises (a failed or inexact export is logged and nothing is written)."""
    if disabled():
        return None
    fingerprint = str(getattr(encoder, "fingerprint", ""))
    folder = cache_folder(cache_dir)
    if not fingerprint or _valid_export(folder, fingerprint) is not None:
        return None
    started = time.perf_counter()
    what = getattr(encoder, "spec", "this model")
    try:
        info = _copy_made(fingerprint, folder)
        if info is None:
            info = _export(encoder, _plan(encoder), folder)
    except TextExportError as exc:
        log.info("no torch-free text tower for %s: %s", what, exc)
        return None
    except Exception as exc:  # torch.onnx, onnx, onnxruntime and tokenizers raise many types
        log.warning("exporting the text tower of %s failed: %s", what, first_line(exc))
        return None
    _made[fingerprint] = folder
    check = info.validation
    note = (
        f"text tower exported for torch-free text queries in {time.perf_counter() - started:.1f} s "
        f"({info.tokenizer_kind} tokens equal on {check['texts']} texts, min cosine "
        f"{check['min_cosine']:.6f} on {check['prompts']} prompts)"
    )
    log.info("%s", note)
    return note


def _valid_export(folder: Path, fingerprint: str) -> ExportInfo | None:
    """The meta of a usable export of these weights in `folder`, or None: every file's size and hash
    as recorded, and a graph that this ONNX Runtime loads (an upgrade that cannot is exported again)."""
    path = meta_path(folder, fingerprint)
    if not path.is_file():
        return None
    try:
        info = ExportInfo.read(path)
        if info.fingerprint != fingerprint:
            return None
        OnnxTextEncoder(folder, info)
    except Exception:  # TextExportError, or ONNX Runtime's own for a graph it cannot load
        return None
    return info


def _copy_made(fingerprint: str, folder: Path) -> ExportInfo | None:
    """Copy an export this process made for the same weights into `folder`; None if there is none."""
    source = _made.get(fingerprint)
    info = _valid_export(source, fingerprint) if source is not None else None
    if source is None or info is None:
        return None
    with _staging(folder, fingerprint) as staging:
        for file in info.files.values():
            shutil.copyfile(source / file.name, staging / file.name)
        _publish(staging, folder, info, json.loads(meta_path(source, fingerprint).read_text()))
    return info


@dataclass
class _Plan:
    """What an export of one model consists of, decided before anything is traced."""

    kind: str
    clean: str
    special_tokens: tuple[str, ...]
    context_length: int
    pad_id: int
    trim_padding: bool
    tokenizer: Any  # a tokenizers.Tokenizer, padded and truncated as the model's tokenizer is
    reference: Any  # the model's own tokenizer (open_clip's), for the check

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        split = clip_split_pattern(self.special_tokens) if self.kind == CLIP_BPE else None
        return token_ids(self.tokenizer, texts, self.clean, split)


def _plan(encoder: Any) -> _Plan:
    """The torch-free tokenizer for this model, or TextExportError when an export would not be exact."""
    import open_clip
    from open_clip import tokenizer as oc_tokenizer
    from open_clip.hf_model import HFTextEncoder

    from .open_clip_encoder import OpenClipEncoder, causal_clip_text

    if not isinstance(encoder, OpenClipEncoder):
        raise TextExportError("only open_clip models are exported")
    model, reference = encoder.model, encoder.tokenizer
    cleans = {oc_tokenizer._clean_lower: "lower", oc_tokenizer._clean_whitespace: "whitespace"}
    clean = cleans.get(getattr(reference, "clean_fn", None))
    if clean is None:
        raise TextExportError("its tokenizer cleans text in a way this export does not reproduce")
    if type(model) is open_clip.CLIP and type(reference) is oc_tokenizer.SimpleTokenizer:
        if reference.reduction_fn is not None or not reference.context_length:
            raise TextExportError("its tokenizer reduces texts instead of truncating them")
        specials = tuple(reference.decoder[i] for i in reference.all_special_ids)
        trim = causal_clip_text(model)
        return _Plan(
            CLIP_BPE,
            clean,
            specials,
            int(reference.context_length),
            0,
            trim,
            _clip_bpe_tokenizer(reference, trim),
            reference,
        )
    if (
        type(model) is open_clip.CustomTextCLIP
        and isinstance(getattr(model, "text", None), HFTextEncoder)
        and type(reference) is oc_tokenizer.HFTokenizer
    ):
        hf = reference.tokenizer
        if not getattr(hf, "is_fast", False):
            raise TextExportError("its Hugging Face tokenizer has no tokenizer.json (not a fast tokenizer)")
        if reference.tokenizer_mode or reference.strip_sep_token:
            raise TextExportError("its tokenizer uses a special tokenization mode")
        if hf.padding_side != "right" or hf.truncation_side != "right" or hf.pad_token_id is None:
            raise TextExportError("its tokenizer pads or truncates on the left")
        trim = encoder._hf_pad_token_id is not None  # OpenClipEncoder trims padding for these towers
        if trim and int(hf.pad_token_id) != encoder._hf_pad_token_id:
            raise TextExportError("its tokenizer pads with another id than the text tower masks")
        context_length = int(reference.context_length)
        return _Plan(
            HF,
            clean,
            (),
            context_length,
            int(hf.pad_token_id),
            trim,
            _hf_tokenizer(hf, context_length, trim),
            reference,
        )
    raise TextExportError("only plain CLIP text towers and Hugging Face text towers are exported")


def _clip_bpe_tokenizer(simple: Any, trim: bool = False) -> Any:
    """open_clip's SimpleTokenizer as a `tokenizers` BPE, for words split by `clip_split_pattern`: the
    same byte-to-unicode mapping, merges with "</w>" ending a word, start and end tokens,
    truncation that keeps the end token last, and zero padding to the context length (to the longest
    text of a batch, with `trim`)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors

    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.__getitem__)
    tokenizer = Tokenizer(
        models.BPE(vocab=dict(simple.encoder), merges=[tuple(m) for m in merges], end_of_word_suffix="</w>")
    )
    # A word that is a special token (the split pattern matches them first) maps to its id whole.
    specials = [simple.decoder[i] for i in simple.all_special_ids]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    sot, eot = simple.decoder[simple.sot_token_id], simple.decoder[simple.eot_token_id]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", special_tokens=[(sot, simple.sot_token_id), (eot, simple.eot_token_id)]
    )
    tokenizer.enable_truncation(max_length=int(simple.context_length))
    tokenizer.enable_padding(pad_id=0, pad_token=simple.decoder[0], length=None if trim else int(simple.context_length))
    return tokenizer


def _hf_tokenizer(hf: Any, context_length: int, trim: bool) -> Any:
    """The fast tokenizer's own tokenizer.json, set to truncate as open_clip's HFTokenizer asks it to,
    and padded to the longest text when the tower masks padding (as `OpenClipEncoder` trims it)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=context_length)
    tokenizer.enable_padding(
        pad_id=int(hf.pad_token_id),
        pad_token=str(hf.pad_token),
        pad_type_id=int(hf.pad_token_type_id),
        length=None if trim else context_length,
    )
    return tokenizer


def _check_tokens(plan: _Plan) -> int:
    """Token ids equal to the model's tokenizer on TOKEN_CORPUS (padded to the context length)."""
    texts = list(TOKEN_CORPUS)
    expected = plan.reference(texts).numpy()
    ours = plan.token_ids(texts)
    for text, want, got in zip(texts, expected, ours, strict=True):
        padded = list(got) + [plan.pad_id] * (plan.context_length - len(got))
        if padded != [int(i) for i in want]:
            raise TextExportError(f"token ids differ from the model's tokenizer on {text[:40]!r}")
    return len(texts)


def _export(encoder: Any, plan: _Plan, folder: Path) -> ExportInfo:
    """Trace, check and publish the export; nothing reaches its final name unless every check passed."""
    import onnxruntime
    import torch

    from .inference import _quiet_root_logger

    checked_texts = _check_tokens(plan)
    fingerprint = str(encoder.fingerprint)
    model = encoder.model
    device = next(model.parameters()).device
    example = torch.tensor(plan.token_ids(["a photo", "an export example"]), device=device)
    axes = {0: "batch", 1: "tokens"} if plan.trim_padding else {0: "batch"}
    with _staging(folder, fingerprint) as staging:
        inline = staging / "inline.onnx"
        fastpath = torch.backends.mha.get_fastpath_enabled()
        try:
            # Attention's fused inference kernel has no ONNX form: trace the plain operations instead.
            torch.backends.mha.set_fastpath_enabled(False)
            with torch.no_grad(), warnings.catch_warnings(), _quiet_root_logger():
                warnings.simplefilter("ignore")  # tracer chatter
                torch.onnx.export(
                    _TextTower(model, plan.trim_padding and plan.kind == CLIP_BPE).eval(),
                    (example,),
                    str(inline),
                    input_names=["tokens"],
                    output_names=["vectors"],
                    dynamic_axes={"tokens": axes, "vectors": {0: "batch"}},
                    dynamo=False,
                )
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        # Named by content, so that two crawls exporting the same weights at once write the same files.
        stem = f"text-{fingerprint}-{sha256_file(inline)[:16]}"
        graph, weights = f"{stem}.onnx", f"{stem}.weights"
        _optimize(inline, staging / graph, weights)
        inline.unlink()
        tokenizer_json = plan.tokenizer.to_str()
        tokenizer = f"text-{fingerprint}-{hashlib.sha256(tokenizer_json.encode()).hexdigest()[:16]}.tokenizer.json"
        (staging / tokenizer).write_text(tokenizer_json, encoding="utf-8")
        files = {
            role: ExportFile(name, (staging / name).stat().st_size, sha256_file(staging / name))
            for role, name in (("tokenizer", tokenizer), ("graph", graph), ("weights", weights))
        }
        info = ExportInfo(
            fingerprint=fingerprint,
            model=encoder.spec.to_dict(),
            tokenizer_kind=plan.kind,
            clean=plan.clean,
            special_tokens=plan.special_tokens,
            context_length=plan.context_length,
            pad_id=plan.pad_id,
            trim_padding=plan.trim_padding,
            dim=int(encoder.dim),
            files=files,
        )
        min_cosine = _check_vectors(encoder, OnnxTextEncoder(staging, info, batch_size=len(VECTOR_PROMPTS)))
        info = replace(
            info,
            validation={
                "texts": checked_texts,
                "tokens_equal": True,
                "prompts": len(VECTOR_PROMPTS),
                "min_cosine": round(min_cosine, 7),
                "bar": COSINE_BAR,
            },
        )
        meta = info.to_dict()
        meta.update(
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            versions={"torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        )
        _publish(staging, folder, info, meta)
    return info


def _optimize(source: Path, target: Path, weights: str) -> None:
    """ONNX Runtime's hardware-independent graph optimisations (fusions up to the extended level), done
    once here and saved, so a query loads the graph as it is (40 ms instead of 100+ for ViT-B-32). The
    weights go to a file of their own, which ONNX Runtime maps instead of parsing and copying."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    options.add_session_config_entry("session.disable_prepacking", "1")
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    if not (target.is_file() and (target.parent / weights).is_file()):
        raise TextExportError("ONNX Runtime did not save the optimised graph")


def _check_vectors(encoder: Any, exported: OnnxTextEncoder) -> float:
    """The smallest cosine between the export's vectors and torch's, over the prompts embedded as one
    batch (padding differs within it) and one at a time."""
    prompts = list(VECTOR_PROMPTS)
    exact = _reference_vectors(encoder, prompts)
    cosines = [np.sum(exported.embed_texts(prompts) * exact, axis=1)]
    cosines += [np.sum(exported.embed_texts([p]) * exact[i], axis=1) for i, p in enumerate(prompts)]
    min_cosine = float(np.min(np.concatenate(cosines)))
    if not min_cosine >= COSINE_BAR:
        raise TextExportError(f"its ONNX vectors differ from torch's (min cosine {min_cosine:.6f} < {COSINE_BAR})")
    return min_cosine


def _reference_vectors(encoder: Any, prompts: list[str]) -> np.ndarray:
    """Unit vectors from open_clip's own `encode_text` on its own padded tokens: what the export must
    equal, whatever shortcut the encoder takes."""
    import torch

    with torch.inference_mode():
        tokens = encoder.tokenizer(prompts).to(encoder.device)
        vectors = encoder.model.encode_text(tokens, normalize=True)
    return normalize_rows(vectors.float().cpu().numpy())


@contextlib.contextmanager
def _staging(folder: Path, fingerprint: str) -> Iterator[Path]:
    """A temporary folder beside the cache entries (same file system, so renames are atomic), removed
    afterwards with whatever is left in it."""
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale(folder)
    staging = folder / f".text-{fingerprint}.{os.getpid()}.{threading.get_ident()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, folder: Path, info: ExportInfo, meta: dict[str, Any]) -> None:
    """Move the files into place, then the meta (which makes them an export), then drop the files of
    the export it replaced."""
    previous = meta_path(folder, info.fingerprint)
    try:
        replaced = {f.name for f in ExportInfo.read(previous).files.values()} if previous.is_file() else set()
    except TextExportError:
        replaced = set()
    for file in info.files.values():
        os.replace(staging / file.name, folder / file.name)
    (staging / previous.name).write_text(json.dumps(meta, indent=2))
    os.replace(staging / previous.name, previous)
    for name in replaced - {f.name for f in info.files.values()}:
        with contextlib.suppress(OSError):
            (folder / name).unlink()


def _remove_stale(folder: Path) -> None:
    """Staging folders of exports that died, and files no meta names, once they are a day old."""
    named: set[str] = set()
    for meta in folder.glob("text-*.json"):
        with contextlib.suppress(TextExportError):
            named |= {f.name for f in ExportInfo.read(meta).files.values()}
    now = time.time()
    for path in [*folder.glob(".text-*.tmp"), *folder.glob("text-*-*")]:
        try:
            if path.name in named or now - path.stat().st_mtime < STALE_SECONDS:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
        except OSError:
            continue


def _TextTower(model: Any, trim: bool = False) -> Any:  # noqa: N802 - a class defined on use: torch loads lazily
    """open_clip's `encode_text` (unnormalised) as a module's forward: the graph that is exported. A
    Hugging Face tower builds its attention mask from the token ids inside it, as open_clip does; a
    causal CLIP tower (`trim`) runs over as many positions as its tokens have (`encode_text_trimmed`).
    """
    import torch

    from .open_clip_encoder import encode_text_trimmed

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: Any) -> Any:
            if trim:
                return encode_text_trimmed(self.model, tokens)
            return self.model.encode_text(tokens, normalize=False)

    return TextTower()
