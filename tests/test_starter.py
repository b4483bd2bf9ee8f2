"""The bundled starter model: it loads offline through open_clip, its text tower is the real MiniLM, its
weights are safe to load, and it gives the documented quality on the bundled example folder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import vecsearch
from vecsearch.cli import main as cli
from vecsearch.encoders import (
    STARTER_MODEL,
    is_available_offline,
    list_models,
    load_encoder,
    resolve_spec,
    starter,
)
from vecsearch.errors import ModelNotFoundError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "openclipart"
RESULTS = ROOT / "scripts" / "results" / "starter_examples.json"
QUICK_SUBSET = 100
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def starter_encoder():
    return load_encoder("starter")


def test_starter_is_named_and_available_offline():
    for name in ("starter", "Starter", "vecsearch-starter", str(STARTER_MODEL)):
        assert resolve_spec(name) == STARTER_MODEL
    with pytest.raises(ModelNotFoundError, match="--pretrained"):
        resolve_spec("starter", "laion2b_s34b_b79k")
    assert is_available_offline(STARTER_MODEL)
    listed = {info.spec: info for info in list_models()}
    assert listed[STARTER_MODEL].available_offline


def test_weights_ship_small_as_safetensors_without_pickle():
    assert starter.WEIGHTS_PATH.stat().st_size <= 25 * 1024 * 1024
    assert starter.WEIGHTS_PATH.read_bytes()[8:9] == b"{"  # safetensors: 8-byte length, then a JSON header
    card = json.loads(starter.CARD_PATH.read_text())
    assert card["train_seconds"] > 0 and card["val_curve"]


def test_text_tower_is_the_real_minilm(starter_encoder, minilm_encoder):
    texts = ["a red apple", "The letter E.", "bored dog (mammals, dogs)", "a stop sign on a road"]
    ours = starter_encoder.embed_texts(texts)
    reference = minilm_encoder.embed_texts(texts)
    assert ours.shape == (4, 384) and starter_encoder.dim == 384
    assert np.min(np.sum(ours * reference, axis=1)) > 0.9999


def test_images_go_through_open_clip_preprocess_with_white_letterbox(starter_encoder):
    wide = Image.new("RGB", (200, 50), (0, 0, 0))
    pixels = starter_encoder.prepare_image(wide)
    assert tuple(pixels.shape) == (3, 64, 64)
    white = (1.0 - 0.5) / 0.25
    assert float(pixels[:, 0, :].min()) == pytest.approx(white, abs=1e-3)  # padding rows
    assert float(pixels[:, 32, :].max()) < 0  # the black picture itself
    vectors = starter_encoder.embed_images([wide, wide.convert("L").convert("RGB")])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) > 0.999


def test_damaged_or_foreign_weights_are_refused(tmp_path):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(starter.WEIGHTS_PATH.read_bytes()[:1000])
    with pytest.raises(ModelNotFoundError, match="cannot read"):
        starter.build_model(weights=broken)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(starter.WEIGHTS_PATH))
    tensors.pop("visual.attnpool.c_proj.weight")
    foreign = tmp_path / "foreign.safetensors"
    save_file(tensors, str(foreign))
    with pytest.raises(ModelNotFoundError, match="do not fit"):
        starter.build_model(weights=foreign)


def test_missing_weights_give_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(starter, "WEIGHTS_PATH", tmp_path / "absent.safetensors")
    with pytest.raises(ModelNotFoundError, match="missing from this install"):
        starter.load_starter()


@pytest.fixture(scope="module")
def example_results(tmp_path_factory):
    """The evaluation script's own measurement, run on the bundled folder (the quick subset)."""
    import eval_starter

    documented = json.loads(RESULTS.read_text())
    pictures = eval_starter.subset(eval_starter.folder_pictures(EXAMPLES), documented["limit"], seed=0)
    return eval_starter.evaluate(pictures, tmp_path_factory.mktemp("eval"), model="starter", seed=0)


def test_quality_on_the_bundled_examples_matches_the_documented_figures(example_results):
    documented = json.loads(RESULTS.read_text())
    assert example_results["pictures"] == documented["pictures"] == documented["limit"] == QUICK_SUBSET
    tolerance = 0.03
    for task in ("text_to_image", "image_to_text"):
        for k in (1, 5, 10):
            measured = example_results[task][f"recall@{k}"]
            assert measured == pytest.approx(documented[task][f"recall@{k}"], abs=tolerance), (task, k)
            assert measured > 3 * example_results[task][f"chance@{k}"]
    assert example_results["image_to_image"]["recall@1"] == pytest.approx(
        documented["image_to_image"]["recall@1"], abs=tolerance
    )
    assert example_results["image_to_image"]["recall@1"] >= 0.9


def test_cli_runs_the_main_job_on_the_examples(tmp_path):
    folder = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "food", folder / "food")
    shutil.copytree(EXAMPLES / "transportation", folder / "transportation")
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    result = runner.invoke(cli, [*home, "index", str(folder), "--name", "ex", "--model", "starter", "-q"])
    assert result.exit_code == 0, result.output
    pictures = sorted(folder.rglob("*.png"))
    result = runner.invoke(cli, [*home, "search", "ex", "food", "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert len(hits) == 3 and all(hit["kind"] == "image" for hit in hits)
    result = runner.invoke(cli, [*home, "describe", "ex", str(pictures[0]), "-k", "2", "--json"])
    assert result.exit_code == 0 and len(json.loads(result.output)) == 2
    result = runner.invoke(cli, [*home, "classify", str(pictures[0]), "--index", "ex", "-l", "food,vehicle", "--json"])
    assert result.exit_code == 0, result.output
    copy = tmp_path / "copy.jpg"  # the same picture re-encoded, outside the index, finds its original
    Image.open(pictures[0]).convert("RGB").save(copy, quality=90)
    result = runner.invoke(cli, [*home, "search", "ex", str(copy), "-k", "1", "--json"])
    assert json.loads(result.output)[0]["path"] == str(pictures[0])
    index = vecsearch.Index.open(tmp_path / "home" / "ex")
    assert index.spec == STARTER_MODEL
    index.close()
