"""Draw the small example folder the offline demo crawls: simple pictures with caption sidecars.

    python scripts/make_demo_folder.py examples/demo

Deterministic: the same pictures every time. The captions are what the offline demo searches with the
text model until a CLIP-style model is on the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = (160, 120)

# name: (caption lines, background, drawing steps)
SCENES: dict[str, tuple[list[str], str, list[tuple]]] = {
    "food/apple": (["a red apple", "a piece of fruit"], "#f4efe6",
                   [("ellipse", (50, 30, 110, 95), "#c8231d"), ("rect", (78, 18, 83, 34), "#5b3a1a")]),
    "food/banana": (["a yellow banana", "a ripe banana on a table"], "#eee8dc",
                    [("arc", (30, 10, 130, 110), "#f2d227")]),
    "food/pizza": (["a slice of pizza with cheese", "fast food"], "#fff7e8",
                   [("polygon", [(30, 100), (130, 100), (80, 15)], "#f0b54a"), ("ellipse", (70, 60, 85, 75), "#b22f1e")]),
    "food/cake": (["a birthday cake with candles", "a sweet dessert"], "#fdeef4",
                  [("rect", (40, 60, 120, 105), "#f7c6d9"), ("rect", (60, 40, 65, 60), "#3f7fd8"), ("rect", (95, 40, 100, 60), "#3f7fd8")]),
    "vehicles/car": (["a blue car on the road", "a small automobile"], "#dfe6ea",
                     [("rect", (25, 50, 135, 85), "#2a58c4"), ("ellipse", (35, 75, 60, 100), "#222222"), ("ellipse", (100, 75, 125, 100), "#222222")]),
    "vehicles/bus": (["a yellow school bus", "a bus full of children"], "#dfe6ea",
                     [("rect", (15, 35, 145, 90), "#f3c623"), ("ellipse", (30, 80, 55, 105), "#222222"), ("ellipse", (105, 80, 130, 105), "#222222")]),
    "vehicles/boat": (["a sailing boat on the sea", "a sailboat"], "#9fd3f2",
                      [("polygon", [(40, 85), (120, 85), (105, 100), (55, 100)], "#7a4a22"), ("polygon", [(80, 20), (80, 82), (120, 82)], "#ffffff")]),
    "vehicles/plane": (["an airplane in the sky", "a passenger jet flying"], "#8ec5f0",
                       [("rect", (30, 55, 130, 68), "#eeeeee"), ("polygon", [(70, 60), (95, 60), (75, 25)], "#dddddd")]),
    "nature/tree": (["a green tree in a field", "an oak tree"], "#cfe8c4",
                    [("rect", (72, 65, 88, 110), "#6b4423"), ("ellipse", (40, 10, 120, 80), "#2e8b3d")]),
    "nature/sunset": (["an orange sun setting over the sea", "a sunset at the beach"], "#f7a35c",
                      [("ellipse", (55, 45, 105, 95), "#ff5e1a"), ("rect", (0, 80, 160, 120), "#2f5d8a")]),
    "nature/mountain": (["snowy mountains under a blue sky", "a mountain landscape"], "#a9d2f5",
                        [("polygon", [(0, 110), (60, 30), (120, 110)], "#6d6d6d"), ("polygon", [(45, 50), (60, 30), (75, 50)], "#ffffff")]),
    "nature/flower": (["a pink flower in bloom", "a blossom in the garden"], "#e8f5e0",
                      [("rect", (77, 60, 83, 115), "#2e8b3d"), ("ellipse", (55, 20, 105, 70), "#e75fa8"), ("ellipse", (72, 37, 88, 53), "#f7d23a")]),
    "animals/cat": (["a black cat sitting", "a kitten"], "#efe6d8",
                    [("ellipse", (50, 45, 110, 110), "#1b1b1b"), ("polygon", [(55, 55), (65, 25), (78, 50)], "#1b1b1b"), ("polygon", [(82, 50), (95, 25), (105, 55)], "#1b1b1b")]),
    "animals/fish": (["an orange fish swimming", "a goldfish in water"], "#7fc6e8",
                     [("ellipse", (40, 40, 110, 80), "#f28a1d"), ("polygon", [(105, 60), (135, 40), (135, 80)], "#f28a1d")]),
    "animals/bird": (["a small bird on a branch", "a sparrow"], "#d7ecf7",
                     [("rect", (20, 85, 140, 92), "#6b4423"), ("ellipse", (60, 45, 100, 85), "#8a5a3b"), ("polygon", [(98, 60), (112, 65), (98, 70)], "#f2b705")]),
    "home/house": (["a house with a red roof", "a family home"], "#dbeefa",
                   [("rect", (40, 55, 120, 110), "#f0e2c0"), ("polygon", [(30, 58), (80, 20), (130, 58)], "#b8322a"), ("rect", (72, 80, 88, 110), "#6b4423")]),
    "home/lamp": (["a desk lamp that is switched on", "a reading light"], "#2b2b35",
                  [("polygon", [(55, 30), (105, 30), (120, 65), (40, 65)], "#f7e27a"), ("rect", (77, 65, 83, 100), "#aaaaaa"), ("rect", (55, 100, 105, 108), "#aaaaaa")]),
    "home/clock": (["a round wall clock", "a clock showing the time"], "#f3f0ea",
                   [("ellipse", (40, 20, 120, 100), "#ffffff"), ("rect", (78, 35, 82, 62), "#111111"), ("rect", (80, 58, 105, 62), "#111111")]),
}


def draw(folder: Path) -> int:
    for name, (captions, background, steps) in SCENES.items():
        image = Image.new("RGB", SIZE, background)
        pen = ImageDraw.Draw(image)
        for kind, geometry, colour in steps:
            if kind == "ellipse":
                pen.ellipse(geometry, fill=colour)
            elif kind == "rect":
                pen.rectangle(geometry, fill=colour)
            elif kind == "polygon":
                pen.polygon(geometry, fill=colour)
            elif kind == "arc":
                pen.arc(geometry, 200, 340, fill=colour, width=14)
        target = folder / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, optimize=True)
        target.with_suffix(".txt").write_text("\n".join(captions) + "\n", encoding="utf-8")
    return len(SCENES)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/demo")
    print(f"drew {draw(out)} pictures into {out}")
