from pathlib import Path

import pytest
import yaml

from rlkit.config import ConfigError, load_experiment
from rlkit.run import check_experiment


def _checked(path, overrides=()):
    """Load, then the plan's input checks (trainer fields, rewards, base model), as a run does first; the data
    files, which these tests leave out, are not checked."""
    exp = load_experiment(path, overrides)
    check_experiment(exp, sections=())
    return exp

EXPERIMENTS = Path(__file__).parent.parent / "experiments"


def _write(tmp_path, text, name="exp.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """
method: sft
data:
  train: [{path: data/x.jsonl}]
  eval: [{path: data/x.jsonl}]
"""


@pytest.mark.parametrize("name", sorted(p.name for p in EXPERIMENTS.glob("*.yaml")))
def test_shipped_experiments_validate(name):
    exp = load_experiment(EXPERIMENTS / name)
    assert exp.output_dir == f"runs/{Path(name).stem}"


def test_grpo_variants_differ_only_in_the_reward_line():
    base = load_experiment(EXPERIMENTS / "grpo_negl1.yaml").to_dict()
    for name in ("grpo_delta1", "grpo_neg_abs_rel", "grpo_neg_l2"):
        other = load_experiment(EXPERIMENTS / f"{name}.yaml").to_dict()
        diff = {k for k in base if base[k] != other[k]}
        assert diff == {"rewards", "output_dir"}, diff
        assert other["rewards"] == [name.removeprefix("grpo_"), "format"]


def test_unknown_keys_name_file_key_and_closest(tmp_path):
    p = _write(tmp_path, BASE + "camra: {f_uni: 10}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'camra'; did you mean 'camera'\?"):
        load_experiment(p)
    p = _write(tmp_path, BASE + "model: {nmae: x}\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: model: unknown key 'nmae'; did you mean 'name'"):
        load_experiment(p)
    p = _write(tmp_path, BASE + "train: {learning_rat: 0.1}\n")
    with pytest.raises(ConfigError, match=r"train: unknown SFTConfig field 'learning_rat'; did you mean 'learning_rate'"):
        _checked(p)
    p = _write(tmp_path, BASE + "camera: {f_unii: 10}\n")
    with pytest.raises(ConfigError, match=r"camera: unknown key 'f_unii'; did you mean 'f_uni'"):
        load_experiment(p)


def test_bad_values_are_named(tmp_path):
    with pytest.raises(ConfigError, match="camera strategy 'mixed'"):
        load_experiment(_write(tmp_path, BASE + "camera: {strategy: mixed}\n"))
    with pytest.raises(ConfigError, match="method 'ppo' is not one of"):
        load_experiment(_write(tmp_path, BASE.replace("sft", "ppo")))
    with pytest.raises(ConfigError, match="marker shape 'star'"):
        load_experiment(_write(tmp_path, BASE + "prompt: {marker: {shape: star}}\n"))
    with pytest.raises(ConfigError, match="grpo needs rewards"):
        load_experiment(_write(tmp_path, BASE.replace("sft", "grpo")))
    with pytest.raises(ConfigError, match="rewards: reward 'neg_l3': as a registry name"):
        _checked(_write(tmp_path, BASE.replace("sft", "grpo") + "rewards: [neg_l3]\n"))
    with pytest.raises(ConfigError, match="data.train\\[0\\]: unknown key 'pth'"):
        load_experiment(_write(tmp_path, "data: {train: [{pth: a.jsonl}], eval: [{path: a.jsonl}]}\n"))
    for key, value, message in (("indoor_lamp", -1, "data.synth: indoor_lamp must be a distance in meters >= 0"),
                                ("indoor_color_jitter", -0.5, "data.synth: indoor_color_jitter must be a number >= 0"),
                                ("indoor_color_jitter", "low", "data.synth.indoor_color_jitter: must be a finite number")):
        with pytest.raises(ConfigError, match=f"exp.yaml: {message}.* got {value!r}"):
            load_experiment(_write(tmp_path, BASE), [f"data.synth={{{key}: {value}}}"])
    with pytest.raises(ConfigError, match="data.eval is empty"):
        load_experiment(_write(tmp_path, "data: {train: [{path: a.jsonl}]}\n"))


def test_overrides_and_trl_passthrough(tmp_path):
    p = _write(tmp_path, BASE + "train: {learning_rate: 0.1, max_steps: 5}\n")
    exp = load_experiment(p, ["train.learning_rate=1e-4", "camera.f_uni=500", "train.gradient_accumulation_steps=4"])
    assert exp.camera.f_uni == 500
    cfg = exp.trl_config()
    assert type(cfg).__name__ == "SFTConfig"
    assert cfg.learning_rate == 1e-4 and cfg.max_steps == 5 and cfg.gradient_accumulation_steps == 4
    assert cfg.bf16 is False  # CPU: fp32 unless train.bf16 says otherwise
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        load_experiment(p, ["train.learning_rate"])


def test_extends_merges_and_does_not_inherit_output_dir(tmp_path):
    _write(tmp_path, BASE + "output_dir: runs/parent\ncamera: {f_uni: 50, crop_width: [10, 20]}\n", "parent.yaml")
    child = load_experiment(_write(tmp_path, "extends: parent.yaml\ncamera: {f_uni: 70}\n", "child.yaml"))
    assert (child.camera.f_uni, child.camera.crop_width) == (70, (10, 20))
    assert child.output_dir == "runs/child"
    with pytest.raises(ConfigError, match="loops back"):
        load_experiment(_write(tmp_path, "extends: self.yaml\n", "self.yaml"))


@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_vllm_modes_pass_through_to_grpo_config(mode):
    exp = load_experiment(EXPERIMENTS / "grpo_negl1.yaml",
                          ["train.use_vllm=true", f"train.vllm_mode={mode}", "train.vllm_gpu_memory_utilization=0.4",
                           "train.vllm_server_port=8123"])
    cfg = exp.trl_config()
    assert type(cfg).__name__ == "GRPOConfig"
    assert (cfg.use_vllm, cfg.vllm_mode, cfg.vllm_gpu_memory_utilization, cfg.vllm_server_port) == (True, mode, 0.4, 8123)
    # the paper's GRPO settings in the shipped experiment
    assert (cfg.num_generations, cfg.beta, cfg.lr_scheduler_type.value) == (8, 0.0, "constant")


def test_vllm_requested_but_missing_fails_before_model_load(monkeypatch):
    import importlib.util

    from rlkit.grpo import check_vllm

    exp = load_experiment(EXPERIMENTS / "grpo_negl1.yaml", ["train.use_vllm=true"])
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install -e '.\[vllm\]'"):
        check_vllm(exp)


def test_reward_kwargs_are_checked_at_load(tmp_path):
    grpo = BASE.replace("sft", "grpo") + "rewards: [neg_l1]\n"
    with pytest.raises(ConfigError, match=r"reward_kwargs names \['neg_l2'\]"):
        _checked(_write(tmp_path, grpo + "reward_kwargs: {neg_l2: {clip: 1}}\n"))
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['cilp'\]"):
        _checked(_write(tmp_path, grpo + "reward_kwargs: {neg_l1: {cilp: 1}}\n"))
    with pytest.raises(ConfigError, match="clip must be a number > 0 and finite, got inf"):
        _checked(_write(tmp_path, grpo + "reward_kwargs: {neg_l1: {clip: .inf}}\n"))


def test_changed_config_refuses_a_used_run_dir(tmp_path):
    from rlkit.rundir import check_run_dir
    from rlkit.config import save_resolved

    exp = load_experiment(EXPERIMENTS / "sft_synthetic.yaml", [f"output_dir={tmp_path}"])
    save_resolved(exp, tmp_path / "config.yaml")
    check_run_dir(exp, tmp_path)  # same config: fine
    changed = load_experiment(EXPERIMENTS / "sft_synthetic.yaml", [f"output_dir={tmp_path}", "camera.f_uni=500"])
    check_run_dir(changed, tmp_path)  # nothing trained yet: the config.yaml binds nothing
    (tmp_path / "checkpoint-2").mkdir()  # a saved step: now the folder is that run's
    with pytest.raises(ConfigError, match="holds a run of a different configuration"):
        check_run_dir(changed, tmp_path)
    assert check_run_dir(exp, tmp_path) is False
    evals = load_experiment(EXPERIMENTS / "sft_synthetic.yaml", [f"output_dir={tmp_path}", "eval.samples_per_dataset=9"])
    assert check_run_dir(evals, tmp_path) is True  # eval settings bind nothing: the run evaluates again
    curved = load_experiment(EXPERIMENTS / "sft_synthetic.yaml", [f"output_dir={tmp_path}", "eval.during_training={}"])
    save_resolved(curved, tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="holds a run of a different configuration"):  # the curve generates with it
        check_run_dir(load_experiment(EXPERIMENTS / "sft_synthetic.yaml", [
            f"output_dir={tmp_path}", "eval.during_training={}", "eval.max_new_tokens=9"]), tmp_path)
    save_resolved(exp, tmp_path / "config.yaml")
    for curve in ("eval.seed=3", "eval.during_training={every_steps: 5}"):  # the curve's subset and cadence do
        with pytest.raises(ConfigError, match="holds a run of a different configuration"):
            check_run_dir(load_experiment(EXPERIMENTS / "sft_synthetic.yaml", [f"output_dir={tmp_path}", curve]),
                          tmp_path)
    (tmp_path / "config.yaml").write_text("method: sft\ndata:\n  train: [{path: x.jso")  # cut short, a step saved
    with pytest.raises(ConfigError, match="holds a run of a different configuration"):
        check_run_dir(exp, tmp_path)
    # a config.yaml without a field is read with the field at its default
    unlit = load_experiment(EXPERIMENTS / "sft_synthetic.yaml", [f"output_dir={tmp_path}", "data.synth.indoor_lamp=0"])
    saved = yaml.safe_load(yaml.safe_dump(unlit.to_dict()))
    del saved["data"]["synth"]["indoor_lamp"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    check_run_dir(unlit, tmp_path)
    with pytest.raises(ConfigError, match="holds a run of a different configuration"):
        check_run_dir(exp, tmp_path)  # the default experiment's lamp (4) is not the field's default (none)


def test_brightness_task_refuses_distance_only_wording():
    for override, key in (("camera.strategy=predict_rays", "predict_rays"), ("prompt.reference=text", "text")):
        with pytest.raises(ConfigError, match=f"tiny_pretrain.yaml: prompt task 'brightness' is not a point's distance.*{key}"):
            load_experiment(EXPERIMENTS / "tiny_pretrain.yaml", [override])
    with pytest.raises(ConfigError, match="tiny_pretrain.yaml: data.shuffle_labels needs per-pixel labels in the records"):
        load_experiment(EXPERIMENTS / "tiny_pretrain.yaml", ["data.shuffle_labels=true"])


def test_model_override_with_a_base_stage_is_rejected():
    with pytest.raises(ConfigError, match="differs from that of base .*rescaled_base_synthetic.yaml"):
        _checked(EXPERIMENTS / "grpo_negl1.yaml", ["model.name=Qwen/Qwen2.5-VL-3B-Instruct"])
    # the same model in both (inherited, or set in both through base_overrides) is fine
    exp = load_experiment(EXPERIMENTS / "grpo_negl1.yaml", [
        "model.name=Qwen/Qwen2.5-VL-3B-Instruct", 'base_overrides=["model.name=Qwen/Qwen2.5-VL-3B-Instruct"]'])
    assert exp.model.name == "Qwen/Qwen2.5-VL-3B-Instruct"


def test_tiny_sizes_are_checked_at_load_and_ignored_for_real_models(caplog):
    with pytest.raises(ConfigError, match="model.tiny: unknown field 'vision_layer'; did you mean 'vision_layers'"):
        load_experiment(EXPERIMENTS / "sft_synthetic.yaml", ["model.tiny={vision_layer: 4}"])
    # the default sets tiny sizes; pointing it at a real checkpoint keeps working (the sizes do not apply)
    from rlkit.models import ensure_model_path

    caplog.set_level("INFO")
    exp = load_experiment(EXPERIMENTS / "sft_synthetic.yaml", ["model.name=Qwen/Qwen2.5-VL-3B-Instruct"])
    assert exp.model.tiny and ensure_model_path(exp.model) == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert "model.tiny is ignored" in caplog.text


def test_values_that_cannot_mean_anything_are_refused(tmp_path):
    from rlkit.config import ConfigError, experiment_from_dict
    from rlkit.sweep import load_sweep

    base = {"data": {"train": [{"path": "x.jsonl"}], "eval": [{"path": "x.jsonl"}]}}
    for over, message in (({"eval": {"constant": -2.0}}, "eval.constant must be > 0"),
                          ({"eval": {"max_new_tokens": 0}}, "eval.max_new_tokens must be >= 1"),
                          ({"data": {**base["data"], "synth": {"hfov": [180, 180]}}}, "hfov must be"),
                          ({"data": {**base["data"], "synth": {"width": [0, 0]}}}, "width must be")):
        with pytest.raises(ConfigError, match=message):
            experiment_from_dict({**base, **over})
    (tmp_path / "list.yaml").write_text("extends: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="extends must be one file name"):
        load_experiment(tmp_path / "list.yaml")
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(base))
    for body, message in (({"seeds": [0, 0]}, r"seeds lists \[0\] more than once"),
                          ({"arms": {"../../../outside": {}}}, "arm name '../../../outside' must be"),
                          ({"scales": {"../../escape": {}}}, "scale name '../../escape' must be"),
                          ({"scales": ["mini"]}, "scales must be a mapping")):
        sweep = {"figure": "f", "experiment": "exp.yaml", "arms": {"a": {}}, **body}
        (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
        with pytest.raises(ConfigError, match=message):
            load_sweep(tmp_path / "sweep.yaml", root=tmp_path / "sweeps")


def test_a_dangling_output_dir_link_is_one_error(tmp_path):
    from rlkit.config import experiment_from_dict
    from rlkit.rundir import check_run_dir

    (tmp_path / "run").symlink_to(tmp_path / "gone")
    exp = experiment_from_dict({"output_dir": str(tmp_path / "run"),
                                "data": {"train": [{"path": "x.jsonl"}], "eval": [{"path": "x.jsonl"}]}})
    with pytest.raises(ConfigError, match="is a link to .*gone, which does not exist"):
        check_run_dir(exp, tmp_path / "run")


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines = ["reward_kwargs:", "  a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):  # 9^9 leaves once expanded
        lines.append(f"  {chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{chr(96 + i)}"] * 9) + "]")
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"bomb.yaml:\d+: invalid YAML: expands to more than 100,000 values"):
        load_experiment(tmp_path / "bomb.yaml")
    # a binary fan-out: few aliases, 2^40 leaves
    lines = ["reward_kwargs:", "  l0: &l0 [x, x]"] + [f"  l{i}: &l{i} [*l{i - 1}, *l{i - 1}]" for i in range(1, 40)]
    (tmp_path / "binary.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="expands to more than 100,000 values"):
        load_experiment(tmp_path / "binary.yaml")
    # ordinary aliases still load
    (tmp_path / "ok.yaml").write_text("data: &d {train: [{path: x.jsonl}], eval: [{path: x.jsonl}]}\nreward_kwargs: {}\n")
    assert load_experiment(tmp_path / "ok.yaml").data.train[0].path == "x.jsonl"


def test_official_template_asks_only_the_depth_of_a_marked_pixel():
    for overrides in (["prompt.task=speed"], ["prompt.reference=text"],
                      ["camera.strategy=predict_rays", "camera.resize=exact"]):
        with pytest.raises(ConfigError, match=r"eval_depthlm_official.yaml: prompt template 'official' asks only"):
            load_experiment(EXPERIMENTS / "eval_depthlm_official.yaml", overrides)


def test_shared_eval_arms_are_checked_like_the_experiments_own_sections(tmp_path):
    from rlkit.config import experiment_from_dict, shared_selection

    base = {"method": "sft", "data": {"train": [{"path": "x.jsonl"}], "eval": [{"path": "x.jsonl"}]},
            "camera": {"f_uni": 50}, "prompt": {"marker": {"shape": "square", "size": 9}}}
    exp = experiment_from_dict({**base, "eval": {"shared_with": [{"camera": {"f_uni": 100}},
                                                                  {"prompt": {"marker": {"shape": "arrow"}}}]}})
    (c1, p1), (c2, p2) = shared_selection(exp)
    assert (c1.f_uni, p1.marker.shape, p1.marker.size) == (100.0, "square", 9)  # the rest is this experiment's
    assert (c2.f_uni, p2.marker.shape, p2.marker.size) == (50.0, "arrow", 9)
    with pytest.raises(ConfigError, match=r"eval.shared_with\[0\].camera: unknown key 'f_un'; did you mean 'f_uni'"):
        experiment_from_dict({**base, "eval": {"shared_with": [{"camera": {"f_un": 100}}]}})
