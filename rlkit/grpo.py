"""GRPO: TRL's GRPOTrainer on the builder's rows (GRPO prompt template), rewards from plugins.

vLLM rollouts are TRL's: ``train.use_vllm: true`` with ``vllm_mode: colocate`` or ``server``
passes through unchanged. If vLLM is asked for but not installed we stop before loading a model.
"""

from __future__ import annotations

import importlib.util
import logging

from rewards import load_reward
from rlkit.builder import ANSWER_COLUMNS, Source, train_dataset
from rlkit.config import ConfigError, Experiment
from rlkit.models import load_model, load_processor, peft_config

log = logging.getLogger(__name__)
GRPO_COLUMNS = ("images", "prompt", *ANSWER_COLUMNS)


def check_vllm(exp: Experiment) -> None:
    if exp.train.get("use_vllm") and importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"{exp.source}: train.use_vllm is true but vLLM is not installed; "
                          "install it with: pip install -e '.[vllm]'  (GPU machines only)")


def reward_functions(exp: Experiment) -> list:
    return [load_reward(ref, exp.reward_kwargs.get(ref)) for ref in exp.rewards]


def make_trainer(exp: Experiment, model_path: str, sources: list[Source], weights: str | None = None):
    """``weights``: a checkpoint to take the model's weights from (a resumed run); else ``model_path``."""
    from trl import GRPOTrainer

    check_vllm(exp)
    funcs = reward_functions(exp)
    processor = load_processor(model_path, exp.model)
    model = load_model(weights or model_path, exp.model)
    stream = exp.train_stream(sources)
    args = exp.trl_config()
    data = train_dataset(stream, GRPO_COLUMNS, num_shards=max(1, args.dataloader_num_workers))
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=data,
                          processing_class=processor, peft_config=peft_config(exp.model))
    return trainer, stream
