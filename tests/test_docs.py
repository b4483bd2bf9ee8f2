"""The README and docs/ tell the truth: their Python examples run, the command reference lists every
option, the README's set-up commands are what CI runs and it stays short, every relative link points at
something that exists; and the public surface is exactly what is documented."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vecsearch
from vecsearch.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"
CLI_DOC = (DOCS / "cli.md").read_text(encoding="utf-8")


def test_public_api_is_pinned() -> None:
    assert sorted(vecsearch.__all__) == sorted(
        [
            "DEFAULT_MODEL",
            "DEFAULT_TEMPLATES",
            "DUPLICATE_THRESHOLDS",
            "Caption",
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
            "INDEX_TYPES",
            "STORAGES",
            "BudgetError",
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
    )
    for name in vecsearch.__all__:
        assert hasattr(vecsearch, name), name


def test_import_loads_no_model_library() -> None:
    code = (
        "import sys, vecsearch, vecsearch.cli\n"
        "heavy = [m for m in ('torch', 'open_clip', 'sentence_transformers', 'faiss', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_readme_starts_with_the_two_commands_ci_runs() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/demo.sh", "scripts/test.sh"]
    assert README.index("```bash") < README.index("**vecsearch is")
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_command_reference_lists_every_option() -> None:
    start = CLI_DOC.index("## Command reference")
    end = CLI_DOC.find("\n## ", start + 1)
    table = CLI_DOC[start : end if end != -1 else len(CLI_DOC)]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| `(?:vecsearch` \(global\)|(\w+)[^`]*`) \| (.*) \|$", line)
        if match:
            rows[match.group(1) or "main"] = match.group(2)
    assert set(rows) == {"main", *main.commands}
    for name, command in [("main", main), *main.commands.items()]:
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--"):
                    assert f"{opt}" in rows[name], f"{name}: {opt} missing from docs/cli.md"


@pytest.mark.parametrize(
    ("page", "heading"),
    [("README.md", "## Python API"), ("docs/python-api.md", "## Example")],
)
def test_python_example_runs(page: str, heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (ROOT / page).read_text(encoding="utf-8")
    block = re.search(re.escape(heading) + r"\n\n```python\n(.*?)```", text, re.S)
    assert block is not None
    code = block.group(1)
    assert 'vecsearch.load_encoder("starter")' in code  # the bundled model: the example runs as written
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, page, "exec"), {"__name__": "example"})
    assert (tmp_path / "indexes" / "clipart" / "manifest.json").is_file()


def test_readme_stays_short() -> None:
    assert len(README.splitlines()) < 200, "README.md is one page: put the reference into docs/"


DOC_PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def _links(text: str) -> list[str]:
    """The targets of the Markdown links in a page, leaving out code blocks and inline code."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(text: str) -> set[str]:
    """The anchors GitHub makes of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        number, unique = 0, slug
        while unique in anchors:
            number += 1
            unique = f"{slug}-{number}"
        anchors.add(unique)
    anchors.update(re.findall(r"""<a (?:name|id)=["']([^"']+)["']""", text))
    return anchors


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(page: Path) -> None:
    missing = []
    for target in _links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http(s), mailto: and the like; anchors within the page are checked below
        path = target.split("#")[0]
        if not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_anchors_point_at_headings_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        linked = page.parent / path if path else page
        if linked.suffix == ".md" and linked.is_file() and anchor not in _anchors(linked.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to headings that do not exist: {broken}"
