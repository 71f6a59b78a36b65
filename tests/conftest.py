import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the records stores (rlkit.store) of the tests' temporary jsonl files, out of the repo's .cache
os.environ.setdefault("RLKIT_RECORDS_CACHE", tempfile.mkdtemp(prefix="rlkit-records-"))

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


def write_experiment(tmp_path, synth_dir, **over):
    """A small SFT experiment YAML on the tiny model; ``over`` merges into its sections."""
    exp = {
        "method": "sft",
        "output_dir": str(tmp_path / "run"),
        "model": {"name": "tiny-qwen2.5-vl", "cache_dir": str(Path(__file__).parent.parent / ".cache/models")},
        "data": {"train": [{"path": str(synth_dir / "indoor_train.jsonl"), "name": "indoor"},
                           {"path": str(synth_dir / "outdoor_train.jsonl"), "name": "outdoor"}],
                 "eval": [{"path": str(synth_dir / "indoor_eval.jsonl"), "name": "indoor"},
                          {"path": str(synth_dir / "outdoor_eval.jsonl"), "name": "outdoor"}]},
        "camera": {"f_uni": 60, "crop_width": [56, 84], "crop_height": [56, 84], "multiple_of": 28},
        "train": {"max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "save_steps": 2,
                  "logging_steps": 1, "report_to": "none", "disable_tqdm": True},
        "eval": {"samples_per_dataset": 6, "batch_size": 6, "max_new_tokens": 12},
    }
    for k, v in over.items():
        exp[k] = {**exp[k], **v} if isinstance(v, dict) and isinstance(exp.get(k), dict) else v
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path
