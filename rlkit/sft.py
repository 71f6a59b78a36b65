"""SFT: TRL's SFTTrainer on the builder's prompt-completion rows (loss on the completion only)."""

from __future__ import annotations

from PIL import Image

from rlkit.builder import SFT_COLUMNS, Source, TrainStream, resized_sizes, train_dataset
from rlkit.camera import Camera
from rlkit.config import ConfigError, Experiment
from rlkit.models import NO_SWITCHES, checkpoint_switches, load_model, load_processor, peft_config
from rlkit.prompts import TASKS, Query, answer, question


def largest_train_image(exp: Experiment, sources: list[Source]) -> tuple[int, int]:
    """The largest (width, height) a training image can have: the largest crop, else the largest
    image after the camera transform."""
    cam = exp.camera
    uncropped = [s for s in sources if not s.spec.train_crop]  # whole images (the aspect jitter only shrinks them)
    if cam.crop_width is not None and cam.crop_height is not None and not uncropped:
        m = cam.multiple_of
        return cam.crop_width[1] // m * m, cam.crop_height[1] // m * m
    sizes = [resized_sizes(s, None, cam) for s in sources]  # from the stores' columns, every image in use
    return max(int(w.max()) for w, _ in sizes), max(int(h.max()) for _, h in sizes)


def longest_sequence(exp: Experiment, processor, size: tuple[int, int]) -> int:
    """Tokens of the longest training sequence: over the tasks, the largest images, the longest question
    and answer."""
    opts, cam = exp.prompt, exp.camera
    w, h = size
    longest = 0
    for task in opts.task_weights():
        q = Query(task, Camera(1e4, 1e4, -1e4, -1e4, w, h), w - 1, h - 1, 9999.99,  # widest numbers
                  second=(w - 1, h - 1), param=9.5, colors=("magenta", "magenta"))
        n = TASKS[task].images
        messages = [{"role": "user", "content": [{"type": "image"}] * n + [{"type": "text", "text": question(
                        q, reference=opts.reference, strategy=cam.strategy, template=opts.template)}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer(
                        q, strategy=cam.strategy, template=opts.template)}]}]
        text = processor.apply_chat_template(messages, tokenize=False)
        enc = processor(images=[Image.new("RGB", size)] * n, text=[text], return_tensors="pt")
        longest = max(longest, int(enc["input_ids"].shape[1]))
    return longest


def check_longest_sequence(exp: Experiment, processor, sources: list[Source], max_length: int | None,
                           switches=NO_SWITCHES) -> None:
    """Stop before training when TRL would cut an image or an answer (it truncates silently). ``switches``:
    the official ones in force (their pre-resize sizes the largest image)."""
    if max_length is None:
        return
    size = switches.pre_resized_size(*largest_train_image(exp, sources), exp.model)
    needed = longest_sequence(exp, processor, size)
    if needed > max_length:
        raise ConfigError(f"{exp.source}: train.max_length {max_length} is too short: the longest training "
                          f"sequence ({size[0]} x {size[1]} image, longest question and answer) is {needed} "
                          f"tokens; set train.max_length >= {needed}, or leave it out (no truncation)")


def make_trainer(exp: Experiment, model_path: str, stream: TrainStream, weights: str | None = None):
    """``weights``: a checkpoint to take the model's weights from (a resumed run); else ``model_path``."""
    from trl import SFTTrainer

    processor = load_processor(model_path, exp.model)
    switches = checkpoint_switches(model_path, exp.model)  # the family's official ones, or none
    args = exp.trl_config(**switches.trl_defaults(exp.train))
    check_longest_sequence(exp, processor, stream.sources, args.max_length, switches)
    model = load_model(weights or model_path, exp.model)
    switches.prepare_model(model, args)
    data = switches.train_rows(train_dataset(stream, SFT_COLUMNS, num_shards=max(1, args.dataloader_num_workers)),
                               exp.model)
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=processor,
                      peft_config=peft_config(exp.model))
