import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FIXTURES = Path(__file__).parent / "fixtures"
OFFICIAL = FIXTURES / "official" / "test.jsonl"


def gradient_image(width: int, height: int) -> Image.Image:
    """R encodes x, G encodes y (in units of 1/4 pixel up to 255): lets tests check coordinate maps."""
    x = np.arange(width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.arange(height, dtype=np.float64)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).clip(0, 255).astype(np.uint8))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A small procedural dataset, rendered once per test session."""
    from rlkit.synth import CameraRange, generate_split

    out = tmp_path_factory.mktemp("synth")
    for family in ("indoor", "outdoor"):
        generate_split(out, family, "train", 12, points_per_image=8, progress=False,
                       camera=CameraRange(width=(96, 160)))
        generate_split(out, family, "eval", 6, points_per_image=8, progress=False,
                       camera=CameraRange(width=(96, 160)))
    return out
