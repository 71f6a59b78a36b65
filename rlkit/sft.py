"""SFT: TRL's SFTTrainer on the builder's prompt-completion rows (loss on the completion only)."""

from __future__ import annotations

import logging

from rlkit.builder import SFT_COLUMNS, Source, train_dataset
from rlkit.config import Experiment
from rlkit.models import load_model, load_processor, peft_config

log = logging.getLogger(__name__)


def make_trainer(exp: Experiment, model_path: str, sources: list[Source], weights: str | None = None):
    """``weights``: a checkpoint to take the model's weights from (a resumed run); else ``model_path``."""
    from trl import SFTTrainer

    processor = load_processor(model_path, exp.model)
    model = load_model(weights or model_path, exp.model)
    stream = exp.train_stream(sources)
    args = exp.trl_config()
    data = train_dataset(stream, SFT_COLUMNS, num_shards=max(1, args.dataloader_num_workers))
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=processor,
                      peft_config=peft_config(exp.model)), stream
