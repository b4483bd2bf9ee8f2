"""What a caption sidecar says, read for what it is: plain lines, Tux Paint's per-language lines
(`fr.utf8=Un chat noir.`), or the JSON that img2dataset writes beside each picture.

A plain line has no language; a Tux Paint line carries its locale, and only the languages asked for are
kept (English by default), so a stamp gives one caption rather than eighty prefixed translations.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DEFAULT_LANGUAGES: tuple[str, ...] = ("en",)
# Tux Paint's translation lines: a gettext locale (`fr`, `pt_BR`, `ca@valencia`, `sr@latin`), then `.utf8=`.
_LANGUAGE_LINE = re.compile(r"^([A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@[A-Za-z]+)?)\.utf-?8=(.*)$", re.IGNORECASE)
_JSON_KEYS = ("caption", "text")


@dataclass(frozen=True)
class SidecarCaption:
    text: str
    language: str | None = None  # the locale the sidecar gave the line; None when it gave none


def parse_text(text: str) -> list[SidecarCaption]:
    """One caption per non-empty line; Tux Paint's `LANG.utf8=` lines lose the prefix and keep the locale."""
    captions = []
    for line in text.splitlines():
        match = _LANGUAGE_LINE.match(line.strip())
        if match:
            captions.append(SidecarCaption(match.group(2), match.group(1)))
        else:
            captions.append(SidecarCaption(line))
    return captions


def parse_json(text: str) -> tuple[list[SidecarCaption], str | None]:
    """The `caption` (or `text`) of a JSON sidecar: (captions, reason when it is not a JSON object)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], f"caption file is not valid JSON (line {exc.lineno}: {exc.msg})"
    if not isinstance(record, dict):
        return [], "caption file is JSON but not an object"
    for key in _JSON_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            return [SidecarCaption(value)], None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [SidecarCaption(v) for v in value], None
    return [], None  # metadata without a caption (img2dataset writes `"caption": null`): nothing to index


def sidecar_captions(
    data: bytes, suffix: str, languages: Sequence[str] = DEFAULT_LANGUAGES
) -> tuple[list[SidecarCaption], str | None]:
    """The wanted captions of a sidecar's bytes, by its kind (`.json` or text): (captions, reason refused)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [], "caption file is not UTF-8 text"
    if suffix.lower() == ".json":
        captions, reason = parse_json(text)
    else:
        captions, reason = parse_text(text), None
    return wanted(captions, languages), reason


def parse_languages(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """`en,fr` → ('en', 'fr'); None → the default. Refuses what cannot be a locale (ValueError)."""
    if value is None:
        return DEFAULT_LANGUAGES
    parts = value.split(",") if isinstance(value, str) else list(value)
    languages = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    for language in languages:
        if not re.fullmatch(r"[A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@[A-Za-z]+)?", language):
            raise ValueError(f"not a language code: {language!r} (expected e.g. en, fr, pt_BR)")
    if not languages:
        raise ValueError("no caption language given")
    return languages


def speaks(language: str | None, languages: Sequence[str]) -> bool:
    """Whether a line in `language` is wanted. Lines without a language always are; `en` takes every
    English locale (en_GB, en_AU), `pt_BR` only Brazilian Portuguese."""
    if language is None:
        return True
    lowered = language.lower()
    primary = re.split(r"[_@]", lowered)[0]
    return any(lowered == w.lower() or ("_" not in w and "@" not in w and primary == w.lower()) for w in languages)


def wanted(captions: Iterable[SidecarCaption], languages: Sequence[str] = DEFAULT_LANGUAGES) -> list[SidecarCaption]:
    return [caption for caption in captions if speaks(caption.language, languages)]
