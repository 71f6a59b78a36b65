"""GRPO: TRL's GRPOTrainer on the builder's rows (GRPO prompt template), rewards from plugins.

vLLM rollouts are TRL's: ``train.use_vllm: true`` with ``vllm_mode: colocate`` or ``server``
passes through unchanged. If vLLM is asked for but not installed we stop before loading a model.
"""

from __future__ import annotations

import importlib.util
import math

from rlkit.builder import ANSWER_COLUMNS, TrainStream, train_dataset
from rlkit.config import ConfigError, Experiment
from rlkit.models import load_model, load_processor, peft_config
from rlkit.rewards import checked_reward, load_reward

GRPO_COLUMNS = ("images", "prompt", *ANSWER_COLUMNS)


def pixel_bounds_resize(exp: Experiment) -> bool:
    """Whether model.min_pixels/max_pixels can change a training image (else they need not reach vLLM)."""
    from rlkit.models import family_from_name

    lo, hi, cam = exp.model.min_pixels, exp.model.max_pixels, exp.camera_options()
    if cam.crop_width is None or cam.crop_height is None:
        return lo is not None or hi is not None
    family = family_from_name(exp.model.name)
    if family is not None and family.longest_edge:  # Pixtral: only a longer side above sqrt(max_pixels) shrinks
        return hi is not None and max(cam.crop_width[1], cam.crop_height[1]) > math.isqrt(hi)
    return (hi is not None and hi < cam.crop_width[1] * cam.crop_height[1]) or \
        (lo is not None and lo > cam.crop_width[0] * cam.crop_height[0])


def check_vllm(exp: Experiment) -> None:
    if not exp.train.get("use_vllm"):
        return
    if exp.train.get("vllm_mode", "colocate") == "colocate" and pixel_bounds_resize(exp):
        # TRL builds the colocated engine from the checkpoint alone; its image processor would resize
        # images that training does not (vllm#15364). ./run.sh serve passes the bounds to the server.
        raise ConfigError(f"{exp.source}: model.min_pixels/max_pixels are not passed to a colocated vLLM; use "
                          "train.vllm_mode=server with ./run.sh serve, or save them in the checkpoint's "
                          "preprocessor_config.json and drop them here")
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{exp.source}: train.use_vllm is true but vLLM is not installed; "
                          "install it with: pip install -e '.[vllm]'  (GPU machines only)")


def reward_functions(exp: Experiment) -> list:
    return [checked_reward(load_reward(ref, exp.reward_kwargs.get(ref)), ref) for ref in exp.rewards]


def make_trainer(exp: Experiment, model_path: str, stream: TrainStream, weights: str | None = None):
    """``weights``: a checkpoint to take the model's weights from (a resumed run); else ``model_path``."""
    from trl import GRPOTrainer

    check_vllm(exp)
    funcs = reward_functions(exp)
    processor = load_processor(model_path, exp.model)
    args = exp.trl_config()  # first: a DeepSpeed ZeRO-3 config must exist before the model loads
    model = load_model(weights or model_path, exp.model)
    data = train_dataset(stream, GRPO_COLUMNS, num_shards=max(1, args.dataloader_num_workers))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                          processing_class=processor, peft_config=peft_config(exp.model))
    return trainer
