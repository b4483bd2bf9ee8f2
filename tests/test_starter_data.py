"""The starter model's data preparation and training script, on small trees built here (no apt data needed)."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import eval_starter  # noqa: E402
import starter_data  # noqa: E402
import train_starter  # noqa: E402


def _png(path: Path, size=(40, 30), colour=(200, 30, 30, 255), author: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if author:
        info.add_text("Author", author)
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    inner = Image.new("RGBA", (max(1, size[0] // 2), max(1, size[1] // 2)), colour)
    image.paste(inner, (size[0] // 4, size[1] // 4))
    image.save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    "relative, author, expected",
    [
        ("animals/mammals/dogs/bored_dog_01.png", "", "bored dog (mammals, dogs)"),
        ("animals/2_dead_frogs_lumen_desig_01.png", "Lumen Design Studio", "dead frogs (animals)"),
        (
            "animals/mammals/canguro_architetto_franc_01.png",
            "Architetto Francesco Rollandin",
            "canguro (animals, mammals)",
        ),
        ("shapes/stars/star_67pt11step.png", "", "star (shapes, stars)"),
        ("computer/icons/flat-theme/action/gg_away.png", "", "gg away (action)"),
        ("people/sm_005.png", "", "sm (people)"),
        ("computer/hardware/01.png", "", "computer, hardware"),
    ],
)
def test_openclipart_captions_come_from_names_without_authors_or_numbers(relative, author, expected):
    assert starter_data.openclipart_caption(Path(relative), author) == expected


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    clipart = tmp_path / "openclipart"
    for i in range(1, 4):
        _png(clipart / "food" / f"apple_red_{i:02d}.png", colour=(220, 20, 20, 255))
    _png(clipart / "food" / "apple_red_bw.png", colour=(90, 90, 90, 255))
    for i in range(30):  # a generated series: one group, bigger than MAX_HELDOUT_GROUP
        _png(clipart / "shapes" / "stars" / f"star_{i}pt{i}step.png", colour=(240, 200, 0, 255))
    for name in ("car", "bus", "tree", "house", "boat", "cat", "dog", "fish", "sun", "moon"):
        _png(clipart / "misc" / f"{name}_nicu_b_01.png", author="Nicu Buculei", colour=(20, 20, 200, 255))
    stamps = tmp_path / "tuxpaint"
    for category, name in (("animals", "cat"), ("food", "pear"), ("vehicles", "truck"), ("animals", "dog")):
        png = _png(stamps / category / f"{name}.png", colour=(20, 160, 20, 255))
        png.with_suffix(".txt").write_text(f"A {name}.\nfr.utf8=Un {name}.\n", encoding="utf-8")
    _png(stamps / "food" / "uncaptioned.png")
    return clipart, stamps


def test_collect_reads_both_sources_and_keeps_variants_in_one_group(tmp_path):
    clipart, stamps = _trees(tmp_path)
    records = starter_data.collect(clipart, stamps)
    by_name = {Path(r.path).name: r for r in records}
    assert "uncaptioned.png" not in by_name  # a stamp needs its caption
    assert by_name["cat.png"].caption == "A cat." and by_name["cat.png"].category == "animals"
    assert by_name["car_nicu_b_01.png"].caption == "car (misc)"
    apple_groups = {r.group for r in records if Path(r.path).name.startswith("apple")}
    assert len(apple_groups) == 1  # numbered siblings and the _bw version
    assert len({r.group for r in records if "star" in r.path}) == 1


def test_splits_are_seeded_whole_groups_and_big_series_train(tmp_path):
    clipart, stamps = _trees(tmp_path)
    records = starter_data.collect(clipart, stamps)
    first = starter_data.assign_splits(records, seed=0)
    assert first == starter_data.assign_splits(records, seed=0)
    assert set(first.values()) <= set(starter_data.SPLITS)
    for group in {r.group for r in records}:
        assert len({first[r.path] for r in records if r.group == group}) == 1
    assert {first[r.path] for r in records if "star" in r.path} == {"train"}
    seeds = [starter_data.assign_splits(records, seed=s) for s in range(6)]
    assert any(s != first for s in seeds)


def test_huge_png_is_shrunk_while_streaming_with_bounded_memory(tmp_path):
    pytest.importorskip("pyvips")
    huge = tmp_path / "huge.png"
    side = 6000  # 36 megapixels: RGBA in memory would be 144 MB
    image = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    image.paste(Image.new("RGBA", (side // 2, side // 2), (0, 0, 255, 255)), (side // 4, side // 4))
    image.save(huge)
    del image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    thumb = starter_data.decode_thumbnail(huge, 64)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert thumb.size == (64, 64) and thumb.mode == "RGB"
    pixels = np.asarray(thumb)
    assert tuple(pixels[0, 0]) == (255, 255, 255)  # transparent -> white
    assert pixels[32, 32, 2] > 200 and pixels[32, 32, 0] < 50
    assert grown_mb < 100
    # the one shared implementation: vecsearch's own streamed decoding, used by the crawler as well
    from vecsearch.images import vips_thumbnail

    assert np.array_equal(np.asarray(vips_thumbnail(huge, 64)), pixels)


def test_letterbox_centres_on_white():
    wide = Image.new("RGB", (80, 20), (0, 0, 0))
    box = starter_data.letterbox(wide, 40)
    assert box.shape == (40, 40, 3)
    assert (box[0] == 255).all() and (box[20] == 0).all()


@pytest.mark.parametrize("options", [[], ["--ema", "0.9", "--strong-aug"]], ids=["default", "ema-strong-aug"])
def test_training_script_runs_a_short_training_and_writes_loadable_weights(tmp_path, options):
    from vecsearch.encoders import starter

    clipart, stamps = _trees(tmp_path)
    out = tmp_path / "weights.safetensors"
    code = train_starter.main(
        [
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--limit",
            "16",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--openclipart-dir",
            str(clipart),
            "--tuxpaint-dir",
            str(stamps),
            "--device",
            "cpu",
            "--quiet",
            *options,
        ]
    )
    assert code == 0 and out.is_file()
    from safetensors import safe_open

    with safe_open(str(out), "pt") as handle:
        card = json.loads(handle.metadata()["card"])
        assert all(key.startswith("visual.") or key == "logit_scale" for key in handle.keys())  # noqa: SIM118 (a safetensors file: no `in`)
    assert card["epochs"] == 1 and card["train_pictures"] == 16 and card["train_seconds"] >= 0
    assert card["val_curve"][0]["epoch"] == 1 and np.isfinite(card["val_curve"][0]["loss"])
    trained, _, _ = starter.build_model(weights=out)
    fresh, _, _ = starter.build_model(weights=None)
    changed = [
        name
        for name, tensor in trained.visual.state_dict().items()
        if tensor.is_floating_point() and not np.allclose(tensor.numpy(), fresh.visual.state_dict()[name].numpy())
    ]
    assert changed  # the step moved the weights, and they load back through the model's own loader


@pytest.mark.parametrize("n, relevant, k", [(10, 1, 1), (10, 3, 2), (7, 2, 6), (5, 5, 1)])
def test_chance_level_matches_enumeration(n, relevant, k):
    from itertools import permutations

    orders = list(permutations(range(n))) if n <= 7 else None
    if orders is None:
        expected = 1 - np.prod([(n - relevant - i) / (n - i) for i in range(k)])
    else:
        expected = np.mean([any(x < relevant for x in order[:k]) for order in orders])
    assert eval_starter.random_recall(n, relevant, k) == pytest.approx(expected)
