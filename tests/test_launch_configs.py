"""Cluster launch files (experiments/paper/accelerate/*.yaml, experiments/paper/slurm.sh): checked without GPUs.

The accelerate configs go through accelerate's own loader and launcher code (the environment `accelerate launch`
hands to each worker, and the plugin a worker builds from it); the FSDP wrap classes are looked up in tiny
random-init models of each family; the Slurm script is run with DRY_RUN=1 on fake node names.
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ACCEL = ROOT / "experiments" / "paper" / "accelerate"
SLURM = ROOT / "experiments" / "paper" / "slurm.sh"

EXPECTED = {  # file: (distributed_type, fsdp_version, zero_stage)
    "ddp.yaml": ("MULTI_GPU", None, None),
    "fsdp2_qwen2_5_vl.yaml": ("FSDP", 2, None),
    "fsdp2_pixtral.yaml": ("FSDP", 2, None),
    "zero2.yaml": ("DEEPSPEED", None, 2),
    "zero3.yaml": ("DEEPSPEED", None, 3),
}


def test_every_config_is_covered():
    assert sorted(p.name for p in ACCEL.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    path = ACCEL / name
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig)
    distributed_type, fsdp_version, zero_stage = EXPECTED[name]
    assert cfg.distributed_type.value == distributed_type
    assert cfg.mixed_precision == "bf16"
    assert cfg.num_machines == 1 and cfg.num_processes == 8 and not cfg.use_cpu
    # multi-node launches use the c10d rendezvous; same_network would make accelerate pass a static
    # master_addr instead of rdzv_endpoint, which torchrun ignores for c10d
    assert cfg.same_network is False
    text = path.read_text()
    assert text.startswith("#") and f"--config_file experiments/paper/accelerate/{name}" in text
    assert "-m rlkit experiments/paper/" in text
    if fsdp_version:
        f = cfg.fsdp_config
        assert f["fsdp_version"] == 2
        assert f["fsdp_reshard_after_forward"] is True  # FSDP2's full shard
        assert f["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
        assert f["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
        assert f["fsdp_cpu_ram_efficient_loading"] is True
        assert f["fsdp_activation_checkpointing"] is False  # TRL's gradient_checkpointing does it
        assert f["fsdp_offload_params"] is False
        assert isinstance(f["fsdp_transformer_layer_cls_to_wrap"], str)  # the launcher splits a string on ","
    else:
        assert cfg.fsdp_config == {}
    if zero_stage:
        d = cfg.deepspeed_config
        assert d["zero_stage"] == zero_stage
        assert d["deepspeed_multinode_launcher"] == "standard"  # one torchrun per node, as slurm.sh starts
        assert d.get("zero3_save_16bit_model", False) is (zero_stage == 3)
        assert d.get("zero3_init_flag", False) is (zero_stage == 3)
        # the trainer's values ("auto") must win: rlkit derives the accumulation from global_batch_size
        assert "gradient_accumulation_steps" not in d and "gradient_clipping" not in d
    else:
        assert cfg.deepspeed_config == {}


def launcher_env(name, monkeypatch, machines=2, gpus=8):
    """What `accelerate launch --config_file NAME` (multi-node, as slurm.sh calls it) puts into each worker's
    environment, and the parsed launcher arguments."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    # a fixed free-looking port; the launcher only checks it on machine rank 0
    argv = ["--config_file", str(ACCEL / name), "--num_machines", str(machines),
            "--num_processes", str(machines * gpus), "--machine_rank", "1", "--main_process_ip", "node-a",
            "--main_process_port", "29511", "--rdzv_backend", "c10d", "-m", "rlkit", "recipe.yaml", "train.x=1"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    if args.use_deepspeed:
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)  # as launch_command
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    for key in [k for k in os.environ if k.startswith(("ACCELERATE_", "FSDP_"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    return args


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_launcher_hands_the_workers_these_settings(name, monkeypatch):
    args = launcher_env(name, monkeypatch)
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"
    assert args.nproc_per_node == "8" and args.nnodes == "2"
    assert args.rdzv_endpoint == "node-a:29511"
    kind = EXPECTED[name][0]
    assert args.multi_gpu is (kind == "MULTI_GPU")
    assert args.use_fsdp is (kind == "FSDP")
    assert args.use_deepspeed is (kind == "DEEPSPEED")
    if kind == "FSDP":
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin()  # built from the environment, as in each worker
        assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
        assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
        assert plugin.cpu_ram_efficient_loading is True and plugin.activation_checkpointing is False
        assert plugin.transformer_cls_names_to_wrap == wrap_names(name)
    if kind == "DEEPSPEED":
        from accelerate.utils import DeepSpeedPlugin

        ds = DeepSpeedPlugin().deepspeed_config  # no DeepSpeed import needed to build the config
        stage = EXPECTED[name][2]
        assert ds["zero_optimization"]["stage"] == stage
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
        assert ds["gradient_accumulation_steps"] == "auto" and ds["train_batch_size"] == "auto"


# --- FSDP wrap classes against tiny models of each family --------------------------------------------------

def wrap_names(name):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(ACCEL / name)).fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")


@pytest.fixture(scope="module")
def tiny_qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, bos_token_id=0, eos_token_id=1, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                  fullatt_block_indexes=[1])
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision))


@pytest.fixture(scope="module")
def tiny_pixtral():
    """Pixtral-12B's layout: LlavaForConditionalGeneration with a Pixtral vision tower and a Mistral LM."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, MistralConfig, PixtralVisionConfig

    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 head_dim=16, image_size=64, patch_size=16)
    text = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, bos_token_id=0, eos_token_id=1)
    return LlavaForConditionalGeneration(LlavaConfig(vision_config=vision, text_config=text, image_token_index=10,
                                                     projector_hidden_act="gelu", vision_feature_layer=-1))


@pytest.mark.parametrize("name, model", [("fsdp2_qwen2_5_vl.yaml", "tiny_qwen2_5_vl"),
                                         ("fsdp2_pixtral.yaml", "tiny_pixtral")])
def test_wrap_classes_are_in_the_model(name, model, request, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.dataclasses import get_module_class_from_name
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    model = request.getfixturevalue(model)
    names = wrap_names(name)
    assert len(names) == 2  # one LM block, one vision block
    for cls_name in names:
        assert get_module_class_from_name(model, cls_name) is not None, cls_name
    # the same names transformers declares as the model's unsplittable blocks
    assert set(names) == set(model._no_split_modules)
    # accelerate's own FSDP2 wrap policy (raises for a missing class) picks out every LM and vision block
    launcher_env(name, monkeypatch)
    policy = fsdp2_prepare_auto_wrap_policy(FullyShardedDataParallelPlugin(), model)
    wrapped = [m for m in model.modules() if policy(m)]
    assert {type(m).__name__ for m in wrapped} == set(names)
    assert len(wrapped) == 4  # 2 decoder layers + 2 vision blocks


def test_wrap_classes_are_family_specific(tiny_qwen2_5_vl, tiny_pixtral):
    from accelerate.utils.dataclasses import get_module_class_from_name

    qwen, pixtral = wrap_names("fsdp2_qwen2_5_vl.yaml"), wrap_names("fsdp2_pixtral.yaml")
    assert not any(get_module_class_from_name(tiny_pixtral, n) for n in qwen)
    assert not any(get_module_class_from_name(tiny_qwen2_5_vl, n) for n in pixtral)


# --- experiments/paper/slurm.sh -------------------------------------------------------------------------

def slurm_dry_run(*args, nodes="gpu-a gpu-b gpu-c", **env):
    """Run the script with DRY_RUN=1 and fake nodes; returns {node: [argv, ...]}."""
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DRY_RUN": "1",
            "SLURM_NODE_NAMES": nodes, "SLURM_JOB_NODELIST": "gpu-[a-c]", "SLURM_JOB_ID": "1"}
    out = subprocess.run(["bash", str(SLURM), *args], cwd=ROOT, env={**base, **env}, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    commands = {}
    for line in out.stdout.splitlines():
        node, _, cmd = line.partition(": ")
        commands.setdefault(node, []).append(shlex.split(cmd))
    return commands


def option(argv, flag):
    return argv[argv.index(flag) + 1]


def test_slurm_script_parses():
    assert shutil.which("bash")
    assert subprocess.run(["bash", "-n", str(SLURM)], capture_output=True).returncode == 0


@pytest.fixture()
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"  # only its existence is checked
    path.write_text("method: grpo\n")
    return str(path)


def test_slurm_grpo_with_vllm_server_node(recipe):
    cmds = slurm_dry_run(recipe, "model.max_pixels=1003520", VLLM_SERVER="1")
    assert sorted(cmds) == ["gpu-a", "gpu-b", "gpu-c"]
    assert all(len(v) == 1 for v in cmds.values())
    (serve,) = cmds["gpu-c"]
    assert serve[:3] == ["./run.sh", "serve", recipe]
    assert "model.max_pixels=1003520" in serve  # same model and pixel bounds as the trainers
    assert not any(a.startswith("train.vllm") for a in serve)
    assert option(serve, "--port") == "8000"
    trainers = [cmds["gpu-a"][0], cmds["gpu-b"][0]]
    for rank, argv in enumerate(trainers):
        assert argv[1:3] == ["launch", "--config_file"] and argv[0].endswith("accelerate")
        assert option(argv, "--config_file") == "experiments/paper/accelerate/ddp.yaml"
        assert option(argv, "--machine_rank") == str(rank)
        assert option(argv, "--num_machines") == "2"
        assert option(argv, "--num_processes") == "16"
        assert option(argv, "--main_process_ip") == "gpu-a"
        assert option(argv, "--rdzv_backend") == "c10d"
        assert argv[argv.index("-m") + 1:argv.index("-m") + 3] == ["rlkit", recipe]
        assert "model.max_pixels=1003520" in argv
        for override in ("train.use_vllm=true", "train.vllm_mode=server", "train.vllm_server_host=gpu-c",
                         "train.vllm_server_port=8000"):
            assert override in argv
    assert option(trainers[0], "--main_process_port") == option(trainers[1], "--main_process_port")


def test_slurm_sft_uses_every_node(recipe):
    config = "experiments/paper/accelerate/fsdp2_qwen2_5_vl.yaml"
    cmds = slurm_dry_run(recipe, config, "train.learning_rate=1e-5", GPUS_PER_NODE="4")
    assert sorted(cmds) == ["gpu-a", "gpu-b", "gpu-c"]
    ranks = []
    for node, (argv,) in cmds.items():
        assert "serve" not in argv and not any(a.startswith("train.vllm") or a == "train.use_vllm=true"
                                                 for a in argv)
        assert option(argv, "--config_file") == config
        assert option(argv, "--num_machines") == "3" and option(argv, "--num_processes") == "12"
        assert option(argv, "--main_process_ip") == "gpu-a"
        assert argv[-1] == "train.learning_rate=1e-5"
        ranks.append((node, option(argv, "--machine_rank")))
    assert sorted(ranks) == [("gpu-a", "0"), ("gpu-b", "1"), ("gpu-c", "2")]


def test_slurm_refuses_bad_setups(recipe):
    def run(*args, **env):
        base = {"PATH": os.environ["PATH"], "DRY_RUN": "1", **env}
        return subprocess.run(["bash", str(SLURM), *args], cwd=ROOT, env=base, capture_output=True, text=True,
                              timeout=60)

    no_nodes = run(recipe)
    assert no_nodes.returncode != 0 and "SLURM_NODE_NAMES" in no_nodes.stderr
    one_node = run(recipe, SLURM_NODE_NAMES="gpu-a", VLLM_SERVER="1")
    assert one_node.returncode != 0 and "at least 2 nodes" in one_node.stderr
    missing = run("experiments/paper/no_such_recipe.yaml", SLURM_NODE_NAMES="gpu-a")
    assert missing.returncode != 0 and "not found" in missing.stderr
    assert re.search(r"usage", run(SLURM_NODE_NAMES="gpu-a").stderr)
