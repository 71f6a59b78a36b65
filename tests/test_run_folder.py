"""A run folder never gets stuck: incomplete checkpoints are passed over, a full disk says so and
recovers, and two runs never share one folder."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_experiment

ROOT = Path(__file__).parent.parent


def _run(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "rlkit", *map(str, args)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_resume_passes_over_an_incomplete_checkpoint(tmp_path):
    from rlkit.rundir import last_checkpoint

    run = tmp_path / "run"
    for step, files in ((2, {"trainer_state.json": "{}", "model.safetensors": "w"}),
                        (4, {"trainer_state.json": "{}", "adapter_model.safetensors": "w"}),
                        (6, {"model.safetensors": "w"}),  # killed before the state was written
                        (8, {"trainer_state.json": '{"global_st', "model.safetensors": "w"})):  # half-written state
        (run / f"checkpoint-{step}").mkdir(parents=True)
        for name, text in files.items():
            (run / f"checkpoint-{step}" / name).write_text(text)
    (run / "checkpoint-x").mkdir()
    assert last_checkpoint(run) == str(run / "checkpoint-4")
    assert last_checkpoint(tmp_path / "none") is None


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_recovers_on_rerun(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, train={"max_steps": 4, "save_steps": 2})
    run = tmp_path / "run"
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    # as if killed while checkpoint-4 was being written: its state file is missing
    for p in ("final", "metrics.json", "predictions.csv", "train_info.json", "checkpoint-4/trainer_state.json"):
        (run / p).unlink() if (run / p).is_file() else shutil.rmtree(run / p)
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"passing over incomplete checkpoint {run}/checkpoint-4" in r.stderr
    assert f"resuming from {run}/checkpoint-2" in r.stderr
    assert json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    assert json.loads((run / "metrics.json").read_text())["train_samples"] == 16


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_says_so_and_recovers_once_there_is_space(tmp_path, synth_dir):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(disk)], check=True)
    try:
        exp = write_experiment(tmp_path, synth_dir, output_dir=str(disk / "run"),
                               train={"max_steps": 6, "save_steps": 2, "per_device_train_batch_size": 2})
        r = _run(exp)
        assert r.returncode == 1
        assert "error: " in r.stderr and "the disk is full" in r.stderr and "resumes from the last complete" in r.stderr
        assert "Traceback" not in r.stderr.split("error: ")[-1]
        subprocess.run(["mount", "-o", "remount,size=400m", str(disk)], check=True)
        r = _run(exp)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads((disk / "run" / "metrics.json").read_text())["train_samples"] == 12
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_second_run_into_a_busy_folder_stops_and_a_stale_lock_is_taken_over(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, train={"max_steps": 1, "save_steps": 100},
                           eval={"samples_per_dataset": 1, "batch_size": 1})
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".rlkit.lock").write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                      "since": "earlier"}))
        r = _run(exp)
        assert r.returncode == 2
        assert f"error: {run} is in use by another run (pid {sleeper.pid} on {socket.gethostname()}" in r.stderr
        assert not (run / "config.yaml").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    r = _run(exp)  # its process is gone now: the lock is stale
    assert r.returncode == 0, r.stderr[-3000:]
    assert "taking over the stale lock" in r.stderr and not (run / ".rlkit.lock").exists()


@pytest.mark.slow
def test_a_kill_after_the_last_checkpoint_adds_no_step_on_rerun(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, train={"max_steps": 4, "save_steps": 2})
    run = tmp_path / "run"
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    weights = (run / "final" / "model.safetensors").read_bytes()
    for p in ("final", "metrics.json", "predictions.csv", "train_info.json"):  # killed while final/ was written
        (run / p).unlink() if (run / p).is_file() else shutil.rmtree(run / p)
    r = _run(exp)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "holds the last step: final/ is saved from it" in r.stderr
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert json.loads((run / "metrics.json").read_text())["train_samples"] == 16
    from safetensors.numpy import load

    import numpy as np

    again, before = load((run / "final" / "model.safetensors").read_bytes()), load(weights)
    assert all(np.array_equal(again[k], before[k]) for k in before)


@pytest.mark.slow
def test_a_diverging_run_stops_before_final(tmp_path, synth_dir):
    exp = write_experiment(tmp_path, synth_dir, train={"max_steps": 3, "learning_rate": 1e30, "max_grad_norm": 1e30,
                                                        "save_steps": 100})
    r = _run(exp)
    assert r.returncode == 2 and "training diverged" in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]
    assert not (tmp_path / "run" / "final").exists()
