"""Checks of a local checkpoint folder before anything loads it: one error naming the folder and what it lacks."""

from __future__ import annotations

import json
from pathlib import Path

from rlkit.errors import ConfigError


def check_model_folder(path: str | Path, what: str = "model") -> None:
    """A local checkpoint folder holds what loading it needs, each file whole enough to open: config.json with a
    model_type, weights (safetensors headers that fit their files), a processor and a tokenizer. One ConfigError
    naming the folder and what is wrong, before anything loads. Hub ids (not local paths) are left to the hub."""
    folder = Path(path).expanduser()
    if not folder.exists():
        if str(path).startswith((".", "/", "~")):
            raise ConfigError(f"{what} {path}: folder not found")
        return
    if not folder.is_dir():
        raise ConfigError(f"{what} {path}: not a folder (a checkpoint is a folder with config.json and weights)")
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no config.json (is it a checkpoint folder?)") from None
    except (OSError, ValueError, AttributeError) as e:
        raise ConfigError(f"{what} {path}: config.json cannot be read ({e})") from None
    if not model_type:
        raise ConfigError(f"{what} {path}: config.json has no model_type")
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise ConfigError(f"{what} {path}: no weights (*.safetensors or pytorch_model*.bin)")
    for f in weights:
        if f.suffix == ".safetensors":
            _check_safetensors(f, what, path)
    if not any((folder / n).exists() for n in ("processor_config.json", "preprocessor_config.json")):
        raise ConfigError(f"{what} {path}: no processor files (processor_config.json or preprocessor_config.json); "
                          "save the processor beside the model (processor.save_pretrained)")
    if not any((folder / n).exists() for n in ("tokenizer.json", "tokenizer.model", "vocab.json", "tekken.json")):
        raise ConfigError(f"{what} {path}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")


def _check_safetensors(f: Path, what: str, path) -> None:
    """The header (8-byte length, JSON) and every tensor's byte range lie within the file: a cut copy fails here."""
    size = f.stat().st_size
    try:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or 8 + n > size:
                raise ValueError("the header is cut short")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        raise ConfigError(f"{what} {path}: {f.name} is not a whole safetensors file ({e})") from None
    if 8 + n + end > size:
        raise ConfigError(f"{what} {path}: {f.name} is cut short ({size} bytes, its header needs {8 + n + end})")
