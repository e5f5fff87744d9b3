"""A first run that means something, with nothing to download: scikit-learn's bundled handwritten digits (1797 8x8
scans, 10 classes) as 64x64 RGB PNGs in the ImageNet folder layout, split into train and held-out test, and the
sMLPNet (``test`` variant) trained on the train split, shipped as ``smlpnet_digits.pth``.

    python -m smlp_deploy.samples.digits digits      # writes digits/train/<digit>/, digits/test/<digit>/
    python -m smlp_deploy.samples.digits --checkpoint  # prints the trained checkpoint's path

Writing the images needs scikit-learn (``pip install 'smlp-deploy[demo]'``); tests/digits.py trains the checkpoint
again and compares calibration methods on it.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BackendUnavailableError, SmlpDeployError

CHECKPOINT = Path(str(resources.files(__package__) / "smlpnet_digits.pth"))
IMAGE_SIZE = 64
NUM_CLASSES = 10
SPLIT_SEED = 0
TEST_FRACTION = 0.25
INSTALL = "pip install 'smlp-deploy[demo]'"


def write_digits(root: str | Path) -> dict[str, Path]:
    """Write ``root/train/<digit>/<i>.png`` and ``root/test/<digit>/<i>.png``; return the two split folders.

    The split is stratified and fixed by ``SPLIT_SEED``, so every call writes the same files.
    """
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise BackendUnavailableError(f"the digits come from scikit-learn, which is not installed: {INSTALL}") from None

    root = Path(root)
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, test = train_test_split(indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target)
    splits = {"train": train, "test": test}
    for split, members in splits.items():
        for i in members:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(digits.images[i] * (255.0 / 16.0)).astype(np.uint8)
            image = Image.fromarray(pixels, "L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
            image.convert("RGB").save(folder / f"{i:04d}.png")
    return {split: root / split for split in splits}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smlp_deploy.samples.digits", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, nargs="?", help="where to write train/ and test/")
    parser.add_argument("--checkpoint", action="store_true", help="print the trained checkpoint's path and exit")
    args = parser.parse_args(argv)
    if args.checkpoint:
        print(CHECKPOINT)
        return 0
    if args.folder is None:
        parser.error("name a folder to write the digits to (or --checkpoint)")
    folders = write_digits(args.folder)
    print("wrote", ", ".join(f"{folder} ({len(list(folder.glob('*/*.png')))} images)" for folder in folders.values()))
    print(f"checkpoint: {CHECKPOINT}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except SmlpDeployError as error:  # one line, as the commands print theirs
        raise SystemExit(f"error: {error}") from None
