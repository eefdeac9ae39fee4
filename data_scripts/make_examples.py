"""Recreate examples/ from the photos that ship with scikit-image (CC0 / public domain).

    python data_scripts/make_examples.py [--out examples]

Each photo is downscaled so its longer side is at most 512 pixels and saved as JPEG.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# name in skimage/data -> (output name, description, licence and source as scikit-image records them)
PHOTOS = {
    "coffee.png": ("coffee.jpg", "A cup of coffee on a saucer.",
                   "CC0, photographer Rachel Michetti, courtesy of Pikolo Espresso Bar"),
    "chelsea.png": ("cat.jpg", "Chelsea the cat.", "CC0, photographer Stefan van der Walt"),
    "astronaut.png": ("astronaut.jpg", "The astronaut Eileen Collins.",
                      "public domain, NASA Great Images database (https://flic.kr/p/r9qvLn)"),
    "rocket.jpg": ("rocket.jpg", "Launch of DSCOVR on a Falcon 9 rocket.",
                   "public domain, SpaceX (https://www.flickr.com/photos/spacexphotos/16511594820/)"),
    "coins.png": ("coins.jpg", "Greek coins from Pompeii (grayscale).",
                  "no known copyright restrictions, Brooklyn Museum collection"),
    "clock_motion.png": ("clock.jpg", "A wall clock, motion blurred (grayscale).",
                         "public domain, photographer Stefan van der Walt"),
    "hubble_deep_field.jpg": ("hubble.jpg", "The Hubble eXtreme Deep Field.", "public domain, NASA (HubbleSite)"),
    "retina.jpg": ("retina.jpg", "Fundus photograph of a human retina.",
                   "CC0, Mikael Haggstrom, via Wikimedia Commons"),
}
MAX_SIDE = 512


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "examples"))
    args = parser.parse_args()
    try:
        import skimage
        from PIL import Image
    except ImportError:
        raise SystemExit("this script needs scikit-image and pillow: pip install scikit-image pillow") from None
    source_dir = Path(skimage.__file__).parent / "data"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Example photos",
        "",
        "Real photos from scikit-image's `skimage.data` (scikit-image "
        f"{skimage.__version__}), downscaled to at most {MAX_SIDE} px on the longer side by",
        "`data_scripts/make_examples.py`. Licences as scikit-image records them:",
        "",
        "| file | what it shows | licence and source |",
        "|---|---|---|",
    ]
    for name, (target, description, licence) in PHOTOS.items():
        image = Image.open(source_dir / name)
        image = image.convert("L" if image.mode in ("L", "I;16", "I") else "RGB")
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        image.save(out / target, quality=90)
        lines.append(f"| `{target}` | {description} | {licence} |")
        print(f"{out / target}: {image.size[0]}x{image.size[1]} {image.mode}")
    (out / "SOURCES.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
