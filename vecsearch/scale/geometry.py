"""The model's resize and crop done where pictures are read: a read task ships pictures a twentieth of
their size to the model's actors, and the actors' own transform then changes nothing."""

from __future__ import annotations

from typing import Any


def preprocess_geometry(preprocess: Any) -> tuple[int, int, int, int] | None:
    """(short side, PIL resampling, crop height, crop width) when the model's preprocess begins with a
    torchvision Resize of the short side and a CenterCrop no larger (open_clip's usual transform): then
    the read tasks resize and crop, and the actors get pictures a twentieth of the size, on which the
    same transform's resize and crop change nothing. None for any other preprocess."""
    if callable(geometry := getattr(preprocess, "geometry", None)):  # an exported model's own transform
        return geometry()
    steps = getattr(preprocess, "transforms", None)
    if not steps or len(steps) < 2 or [type(t).__name__ for t in steps[:2]] != ["Resize", "CenterCrop"]:
        return None
    resize, crop = steps[0], steps[1]
    size = resize.size[0] if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1 else resize.size
    resample = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}.get(str(resize.interpolation.value))
    crop_h, crop_w = crop.size
    if not isinstance(size, int) or resample is None or resize.max_size is not None or max(crop_h, crop_w) > size:
        return None
    return size, resample, int(crop_h), int(crop_w)


def shrink(picture: Any, geometry: tuple[int, int, int, int]) -> Any:
    """torchvision's Resize(short side) and CenterCrop on a PIL picture, to the same pixels."""
    size, resample, crop_h, crop_w = geometry
    width, height = picture.size
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    picture = picture.resize((new_w, new_h), resample)
    top, left = int(round((new_h - crop_h) / 2.0)), int(round((new_w - crop_w) / 2.0))
    return picture.crop((left, top, left + crop_w, top + crop_h))
