"""The README tells the truth: its Python example runs, its command reference lists every option,
its set-up commands are what CI runs; and the public surface is exactly what is documented."""

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


def test_public_api_is_pinned() -> None:
    assert sorted(vecsearch.__all__) == sorted([
        "DEFAULT_MODEL", "DEFAULT_TEMPLATES", "Caption", "CaptionsFileError", "CheckReport", "CrawlReport", "Encoder",
        "Finding", "Hit",
        "ImageError", "Index", "IndexCorruptError", "IndexExistsError", "IndexLockedError",
        "IndexNotFoundError", "IndexingInterrupted", "Item", "LabelScore", "ModelError", "ModelInfo",
        "ModelMismatchError", "ModelNotFoundError", "ModelSpec", "ModelUnavailableError", "Query",
        "QueryError", "STARTER_MODEL", "SkippedFile", "Term", "UnsupportedModalityError", "VecsearchError", "__version__",
        "check_index", "classify", "list_models", "load_encoder",
    ])
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
    start = README.index("### Command reference")
    table = README[start:README.index("\n## ", start)]
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
                    assert f"{opt}" in rows[name], f"{name}: {opt} missing from the README"


def test_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = re.search(r"## Python API\n\n```python\n(.*?)```", README, re.S)
    assert block is not None
    code = block.group(1)
    assert 'vecsearch.load_encoder("starter")' in code  # the bundled model: the example runs as written
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "indexes" / "clipart" / "manifest.json").is_file()
