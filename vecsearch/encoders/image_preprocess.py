"""open_clip's image transform for inference, with PIL and NumPy only (importing torchvision costs a cold
query more than a second).

The same PIL operations run in the same order with the same sizes as open_clip's eval transform
(torchvision's `Resize` and `CenterCrop`, open_clip's `ResizeKeepRatio` and `CenterCropOrPad`, then RGB
conversion, scaling to [0, 1] and normalisation in float32), so the pixels come out equal, not merely
close. An export is only written after they were compared with the model's own preprocess
(image_export.py), and tests compare them on pictures of many shapes and modes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES = ("shortest", "longest", "squash")
_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PreprocessConfig:
    """A model's image transform, as open_clip's `preprocess_cfg` states it."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> PreprocessConfig:
        """From open_clip's `preprocess_cfg` (or `to_dict`); ValueError for what this does not reproduce."""
        size = cfg["size"]
        height, width = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        interpolation = str(cfg.get("interpolation") or "bicubic")
        if interpolation == "random":  # open_clip's eval transform reads "random" as bicubic
            interpolation = "bicubic"
        resize_mode = str(cfg.get("resize_mode") or "shortest")
        if interpolation not in _RESAMPLE or resize_mode not in RESIZE_MODES:
            raise ValueError(f"unsupported interpolation {interpolation!r} or resize mode {resize_mode!r}")
        if str(cfg.get("mode", "RGB")) != "RGB":
            raise ValueError(f"unsupported image mode {cfg.get('mode')!r}")
        return cls(
            size=(height, width),
            mean=_three(cfg["mean"]),
            std=_three(cfg["std"]),
            interpolation=interpolation,
            resize_mode=resize_mode,
            fill_color=int(cfg.get("fill_color") or 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize_mode": self.resize_mode,
            "fill_color": self.fill_color,
        }

    def geometry(self) -> tuple[int, int, int, int] | None:
        """(short side, PIL resampling, crop height, crop width) for a square shortest-side transform, the
        resize and crop a distributed crawl's read tasks do ahead of the model; None for others."""
        height, width = self.size
        if self.resize_mode != "shortest" or height != width:
            return None
        return height, int(_RESAMPLE[self.interpolation]), height, width

    def __call__(self, image: Image.Image) -> np.ndarray:
        """One picture as the model's input: float32, (3, height, width)."""
        return to_pixels(self.resized(image), self.mean, self.std)

    def resized(self, image: Image.Image) -> Image.Image:
        """The picture resized and cropped (or padded) to the model's input, in RGB."""
        resample = _RESAMPLE[self.interpolation]
        height, width = self.size
        if self.resize_mode == "squash":
            image = _resize(image, (height, width), resample)
        elif self.resize_mode == "longest":
            image = _resize(image, _keep_ratio(image, self.size, longest=True), resample)
            image = _crop_or_pad(image, self.size, self.fill_color)
        else:
            if height == width:
                image = _resize(image, _shortest_side(image, height), resample)
            else:  # open_clip passes no interpolation here: its ResizeKeepRatio's default, bicubic
                image = _resize(image, _keep_ratio(image, self.size, longest=False), Image.Resampling.BICUBIC)
            image = _crop_or_pad(image, self.size, 0)
        return image.convert("RGB")


def to_pixels(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """An RGB picture scaled to [0, 1] and normalised, as torchvision's ToTensor and Normalize do in float32."""
    array = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    array /= np.float32(255)
    array -= np.asarray(mean, dtype=np.float32)[:, None, None]
    array /= np.asarray(std, dtype=np.float32)[:, None, None]
    return array


def _three(values: Any) -> tuple[float, float, float]:
    items = [float(v) for v in values] if isinstance(values, (list, tuple)) else [float(values)] * 3
    if len(items) != 3:
        raise ValueError(f"expected three channel values, got {values!r}")
    return items[0], items[1], items[2]


def _resize(image: Image.Image, size: tuple[int, int], resample: Image.Resampling) -> Image.Image:
    """torchvision's resize of a PIL image to (height, width): nothing when the size is already right."""
    height, width = size
    if (image.height, image.width) == (height, width):
        return image
    return image.resize((width, height), resample)


def _shortest_side(image: Image.Image, size: int) -> tuple[int, int]:
    """torchvision's output size for `Resize(int)`: the shorter side to `size`, the longer truncated."""
    height, width = image.height, image.width
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_height, new_width


def _keep_ratio(image: Image.Image, target: tuple[int, int], longest: bool) -> tuple[int, int]:
    """open_clip's `ResizeKeepRatio` size (no random scaling at inference)."""
    height, width = image.height, image.width
    ratio_h, ratio_w = height / target[0], width / target[1]
    # open_clip mixes the two ratios with weights 1 and 0; the same arithmetic keeps the same rounding
    ratio = max(ratio_h, ratio_w) * float(longest) + min(ratio_h, ratio_w) * (1.0 - float(longest))
    return round(height * 1.0 / ratio), round(width * 1.0 / ratio)


def _crop_or_pad(image: Image.Image, size: tuple[int, int], fill: int) -> Image.Image:
    """torchvision's `center_crop` (fill 0) and open_clip's `center_crop_or_pad`: pad a side that is too
    short, then crop the centre."""
    crop_height, crop_width = size
    if crop_width > image.width or crop_height > image.height:
        left = (crop_width - image.width) // 2 if crop_width > image.width else 0
        top = (crop_height - image.height) // 2 if crop_height > image.height else 0
        right = (crop_width - image.width + 1) // 2 if crop_width > image.width else 0
        bottom = (crop_height - image.height + 1) // 2 if crop_height > image.height else 0
        bands = len(image.getbands())
        colour: Any = tuple([fill] * bands) if bands > 1 else fill
        palette = image.getpalette() if image.mode == "P" else None
        image = ImageOps.expand(image, border=(left, top, right, bottom), fill=colour)
        if palette is not None:
            image.putpalette(palette)
        if (image.height, image.width) == (crop_height, crop_width):
            return image
    top = int(round((image.height - crop_height) / 2.0))
    left = int(round((image.width - crop_width) / 2.0))
    return image.crop((left, top, left + crop_width, top + crop_height))
