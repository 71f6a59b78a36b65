"""A local checkpoint folder is checked before anything loads it: one error naming what it lacks; the tiny-model
cache rebuilds a damaged entry."""

import shutil
from pathlib import Path

import pytest

from rlkit.checkpoints import check_model_folder
from rlkit.errors import ConfigError
from rlkit.tiny import TinySpec, ensure_tiny_model

ROOT = Path(__file__).parent.parent
CACHE = ROOT / ".cache/models"


@pytest.fixture(scope="module")
def tiny():
    return ensure_tiny_model(CACHE, TinySpec())


def _copy(tiny, tmp_path, name) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / name))


def test_a_whole_checkpoint_passes(tiny):
    check_model_folder(tiny)


@pytest.mark.parametrize("damage, message", [
    ("no_config", "no config.json"),
    ("config_cut", "config.json cannot be read"),
    ("no_weights", "no weights"),
    ("weights_cut", "model.safetensors is cut short"),
    ("header_cut", "model.safetensors is not a whole safetensors file"),
    ("no_processor", "no processor files"),
    ("no_tokenizer", "no tokenizer files"),
])
def test_what_a_folder_lacks_is_named(tiny, tmp_path, damage, message):
    folder = _copy(tiny, tmp_path, damage)
    weights = folder / "model.safetensors"
    if damage == "no_config":
        (folder / "config.json").unlink()
    elif damage == "config_cut":
        (folder / "config.json").write_text('{"model_type": "qwen')
    elif damage == "no_weights":
        weights.unlink()
    elif damage == "weights_cut":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "header_cut":
        weights.write_bytes(weights.read_bytes()[:20])
    elif damage == "no_processor":
        for f in folder.glob("*processor_config.json"):
            f.unlink()
    else:
        for f in folder.glob("tokenizer*"):
            f.unlink()
        (folder / "vocab.json").unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=f"--model {folder}: {message}"):
        check_model_folder(folder, "--model")


def test_missing_local_paths_and_files(tmp_path):
    with pytest.raises(ConfigError, match="folder not found"):
        check_model_folder("./no-such-model")
    check_model_folder("Qwen/Qwen2.5-VL-3B-Instruct")  # a hub id: the hub's to resolve
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_model_folder(tmp_path / "f")


def test_a_damaged_tiny_model_cache_entry_is_built_again(tiny, tmp_path, caplog):
    cache = tmp_path / "models"
    built = ensure_tiny_model(cache, TinySpec())
    weights = built / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 3])
    assert ensure_tiny_model(cache, TinySpec()) == built and "building it again" in caplog.text
    assert weights.read_bytes() == whole  # built deterministically from its spec


def test_a_tiny_model_built_by_two_processes_at_once_lands_whole(tiny, tmp_path):
    """Each process builds in its own folder and renames it into place: the one that finishes second keeps the
    first one's (identical) copy, and replaces a damaged one; no build folder is left behind."""
    from rlkit.tiny import _build_dir, _save_built

    class Saved:  # what a built model and processor write: here the files of an already built one
        def save_pretrained(self, folder):
            shutil.copytree(tiny, folder, dirs_exist_ok=True)

        def parameters(self):
            return []

    out = tmp_path / "models" / tiny.name
    out.parent.mkdir()
    for before in (None, "whole", "damaged"):
        shutil.rmtree(out, ignore_errors=True)
        if before:
            shutil.copytree(tiny, out)
            if before == "damaged":
                (out / "config.json").unlink()
        tmp = _build_dir(out)
        assert tmp != out and tmp.parent == out.parent
        assert _save_built(Saved(), Saved(), TinySpec(), tmp, out) == out
        check_model_folder(out, "tiny model cache")
        assert sorted(p.name for p in out.parent.iterdir()) == [out.name], before
