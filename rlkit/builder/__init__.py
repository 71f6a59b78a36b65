"""The one dataset builder: records -> camera transform -> marker + prompt -> rows.

sources (datasets loaded from the records store) -> samples (``make_sample``, ``to_row``) -> stream (training)
and evalset (the eval selection).

SFT, GRPO, evaluation and the preview all get their samples from ``make_sample``.

- Train: ``train_dataset`` streams rows forever. Sample i is a pure function of (seed, i):
  pick a dataset by weight, an image from the first ``images`` of a seeded permutation, one
  of its first ``points_per_image`` labels, then a fresh crop of random size (``camera.crop``: at a random place
  that keeps that label's marker whole, or centered as the official code does, skipping a label outside it).
  ``images`` and ``points_per_image`` control label density (the paper's Fig. 5).
- Eval: ``select_eval`` picks N labeled pixels per dataset with a seeded permutation, no
  crop; labels whose marker cannot be drawn whole are skipped and counted, never moved (with
  ``eval.shared_with``, also those another arm of the comparison cannot draw: 'unusable_in_another_arm').

Tasks (rlkit.prompts.TASKS; labels: rlkit.labels): ``prompt.tasks`` mixes several by weight. A sample
first draws its task, then a dataset and an image that can serve it; two_point marks a second label of
the image with a second marker, camera_motion shows the image and its pair view (the same resize and
crop for both, no marker).

Rows (TRL's conversational prompt-completion format with an ``images`` column):
  images, prompt, completion, and the answer columns that reward functions receive as
  keyword arguments: label (the true answer, in unit), unit ("m", "m/s", "s"), task, depth
  (the first marked point's euclidean distance in meters; NaN without a marker; the label of
  the depth task), dataset, image, pixels (the marked pixels [[x, y], ...] after the transform),
  pixel (the first of them; [-1, -1] without a marker), intrinsics ([fx, fy, cx, cy, width, height]
  after the transform).
"""

from rlkit.builder.evalset import EvalItem, EvalSet, resized_sizes, select_eval
from rlkit.builder.samples import (ANSWER_COLUMNS, SFT_COLUMNS, Sample, camera_transform, label_values,
                                   make_sample, reads_image, to_row)
from rlkit.builder.sources import ImageCache, Source, load_source
from rlkit.builder.stream import TrainStream, train_dataset

__all__ = ["ANSWER_COLUMNS", "SFT_COLUMNS", "EvalItem", "EvalSet", "ImageCache", "Sample", "Source", "TrainStream",
           "camera_transform", "label_values", "load_source", "make_sample", "reads_image", "resized_sizes",
           "select_eval", "to_row", "train_dataset"]
