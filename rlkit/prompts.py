"""Questions, answers and the one answer parser.

Templates:
- "sft":  the paper's plain text answer, "The point is around 3.47 meters away from the camera."
- "grpo": reason in <think></think>, then the meter number alone in <answer></answer>.
- "generalist": for models the kit did not train (API baselines): points at the marked pixel and asks
  for a best estimate, the number alone in <answer></answer>.
- "official": the words of the official DepthLM code (facebookresearch/DepthLM_Official), which the
  released facebook/DepthLM model was trained on: one fixed question about "the point pointed by the
  red arrow" (depth task, marker reference only) and the target
  "<think> The point is around 3.47 meters away from the camera. </think>" + blank line + "<answer> 3.47 </answer>".

Pixel reference: "marker" (the pixel is drawn on the image; the question says "this point")
or "text" (the question carries the image size and pixel coordinates).

Camera strategies that change the words: "intrinsics_in_prompt" states the intrinsics;
"predict_rays" asks for the ray direction before the distance. ("direct" and "unify_focal"
change only the image.)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rlkit.camera import Camera, ray_angles

TEMPLATES = ("sft", "grpo", "generalist", "official")
REFERENCES = ("marker", "text")


@dataclass(frozen=True)
class Task:
    """What is asked, where its label comes from, and in which unit it is answered (rlkit.builder
    computes the label: ``label_value``)."""

    question: str  # with {param} (speed, time) and {color}/{color2} (two_point) where the task has them
    label_key: str | None  # the record key holding the labels; None: computed (see builder.label_value)
    answer: str  # the SFT answer, with {value} (two decimals)
    quantity: str  # what the GRPO instruction asks for
    unit: str  # the answer's unit ("m", "m/s", "s"; "" for a unitless value)
    distance: bool = True  # a point's distance from the camera: the ray-first strategy and text references apply
    markers: int = 1  # marked pixels: 0 (camera_motion), 1, or 2 (two_point)
    images: int = 1  # 2: the record's image and its "pair" view (camera_motion)
    param: tuple[float, float, float] | None = None  # drawn per sample and stated in the question: (lo, hi, step)
    reads_image: bool = False  # the label is read from the image at the pixel, not from the record


_DISTANCE_ANSWER = "The point is around {value:.2f} meters away from the camera."
TASKS = {
    "depth": Task("How many meters is this point from the camera?", "depth", _DISTANCE_ANSWER,
                  "the distance in meters", "m"),
    "axis_depth": Task("How many meters is this point from the camera, measured along the camera's viewing axis?",
                       "axis_depth", _DISTANCE_ANSWER, "the distance in meters", "m"),
    # the paper's Sec. 3.4 tasks: the label is the marked point's euclidean distance over the stated time or speed
    "speed": Task("How many meters per second must I move to reach this point in {param:g} seconds?", None,
                  "You must move at around {value:.2f} meters per second.", "the speed in meters per second",
                  "m/s", distance=False, param=(1.0, 10.0, 0.5)),
    "time": Task("How many seconds does it take to reach this point moving at {param:g} meters per second?", None,
                 "It takes around {value:.2f} seconds.", "the time in seconds", "s", distance=False,
                 param=(0.5, 5.0, 0.5)),
    # the 3D distance between the two back-projected points (exact from each label's depth and the intrinsics)
    "two_point": Task("How many meters apart are the point marked in {color} and the point marked in {color2}?", None,
                      "The two points are around {value:.2f} meters apart.", "the distance in meters", "m",
                      distance=False, markers=2),
    # two images of one scene; the label is the length of the record's pair translation
    "camera_motion": Task("How many meters did the camera move between these two images?", None,
                          "The camera moved around {value:.2f} meters.", "the distance in meters", "m",
                          distance=False, markers=0, images=2),
    # no depth at all: can the model find the marked pixel and read what is there? (experiments/tiny_pretrain.yaml)
    "brightness": Task("How bright is the surface at this point, from 0 (black) to 1 (white)?", None,
                       "The brightness at this point is around {value:.2f}.", "the brightness", "",
                       distance=False, reads_image=True),
}
GRPO_INSTRUCTION = (" First think about it inside <think> </think> tags, then give {quantity} "
                    "as a single number inside <answer> </answer> tags.")
# utils/datasets.py of the official code writes the question and, for training, "<think> ... </think>" and
# "<answer> ... </answer>" (two decimals each); its train.py joins the two with a blank line.
OFFICIAL_QUESTION = ("Given this image, how far is the point pointed by the red arrow from the camera? Output the "
                     "thinking process in <think> </think> and final answer (the meter number only, without the "
                     "unit) in <answer> </answer> tags.")
OFFICIAL_ANSWER = ("<think> The point is around {value:.2f} meters away from the camera. </think>\n\n"
                   "<answer> {value:.2f} </answer>")
GENERALIST_INSTRUCTION = (" Give your best estimate of {quantity}, even if you are unsure, as a single number "
                          "without units inside <answer> </answer> tags.")


@dataclass(frozen=True)
class Query:
    """Everything the words of one sample depend on (coordinates after the camera transform)."""

    task: str
    camera: Camera
    x: int  # the marked pixel (-1, -1 for a task without markers)
    y: int
    value: float  # the label, in the task's unit
    second: tuple[int, int] | None = None  # two_point: the second marked pixel
    param: float | None = None  # speed: the seconds; time: the meters per second
    colors: tuple[str, str] = ("red", "blue")  # two_point: the markers' color names, as the question says them


def question(q: Query, *, reference: str, strategy: str, template: str) -> str:
    task = TASKS[q.task]
    if template == "official":
        check_official(q.task, reference, strategy)
        return OFFICIAL_QUESTION
    if reference == "text":
        text = (f"Given this image of size (width = {q.camera.width}, height = {q.camera.height}), "
                f"how far is the pixel at ({q.x}, {q.y}) from the camera?")
    else:
        text = task.question.format(param=q.param, color=q.colors[0], color2=q.colors[1])
    if strategy == "intrinsics_in_prompt":
        c = q.camera
        text = (f"This image was taken by a camera where the camera intrinsics are (fx = {c.fx:.1f}, "
                f"fy = {c.fy:.1f}, cx = {c.cx:.1f}, cy = {c.cy:.1f}). " + text)
    if strategy == "predict_rays":
        text += " Give the direction of the point before its distance."
    if template == "grpo":
        text += GRPO_INSTRUCTION.format(quantity=task.quantity)
    if template == "generalist":
        text = ("The point in question is marked in the image. " if reference == "marker" else "") + text
        text += GENERALIST_INSTRUCTION.format(quantity=task.quantity)
    return text


def answer(q: Query, *, strategy: str, template: str) -> str:
    """The target text (two decimals, as in the paper)."""
    if template == "official":
        return OFFICIAL_ANSWER.format(value=q.value)
    if template in ("grpo", "generalist"):
        return f"<answer>{q.value:.2f}</answer>"
    if strategy == "predict_rays":
        right, below = ray_angles(q.camera, q.x, q.y)
        horiz = f"{abs(right):.1f} degrees to the {'right' if right >= 0 else 'left'}"
        vert = f"{abs(below):.1f} degrees {'below' if below >= 0 else 'above'}"
        return f"The point is around {horiz}, {vert} and {q.value:.2f} meters away from the camera."
    return TASKS[q.task].answer.format(value=q.value)


def check_official(task: str, reference: str, strategy: str | None = None) -> None:
    """The official template has one fixed question: the depth of the marked pixel, no other words."""
    if task != "depth" or reference != "marker" or strategy in ("intrinsics_in_prompt", "predict_rays"):
        raise ValueError(f"prompt template 'official' asks only the depth of a marked pixel (task depth, reference "
                         f"marker, camera strategy unify_focal or direct); got task {task!r}, reference "
                         f"{reference!r}, strategy {strategy!r}")


# Linear time on any text (a GRPO completion can be 64k digits): a number starts only where no digit or
# point stands before it, and its digits are matched atomically, so no match is retried from inside a run.
# \d is Unicode-aware: '٣' and '３' are digits here, as in float() and so in the format reward.
_NUMBER = r"(?<![\d.])[-+]?(?>\d+(?:\.\d*)?|\.\d+)(?>[eE][-+]?\d+)?"
# a tag's content cannot hold another opening tag, so an unclosed <answer> is scanned only to the next one
_ANSWER_TAG = re.compile(r"<answer>((?:(?!<answer>).)*?)</answer>", re.DOTALL | re.IGNORECASE)
# a number followed by the unit's words; "m" is not the m of "m/s" or "meters per second"
_UNIT_WORDS = {"m": r"(?:meters?|metres?|m)(?![/\w])(?!\s+per\b)",
               "m/s": r"(?:m/s|(?:meters?|metres?)\s+per\s+second)\b",
               "s": r"(?:seconds?|secs?|s)\b"}
_WITH_UNIT = {unit: re.compile(rf"({_NUMBER})\s*{words}", re.IGNORECASE) for unit, words in _UNIT_WORDS.items()}
_BARE = re.compile(rf"^\s*({_NUMBER})\s*$")
_ANY_NUMBER = re.compile(_NUMBER)


def _with_unit(unit: str):
    def find(text: str) -> str | None:
        found = _WITH_UNIT[unit].findall(text)
        bare = _BARE.match(text)
        return found[-1] if found else (bare.group(1) if bare else None)
    return find


def _last_number(text: str) -> str | None:
    nums = _ANY_NUMBER.findall(text)
    return nums[-1] if nums else None


def _parse(text, untagged) -> float | None:
    """The content of the last <answer>...</answer> if it is exactly one number, else ``untagged(text)``;
    None unless the result is a finite positive number. Never raises."""
    if not isinstance(text, str):
        return None
    try:
        tags = _ANSWER_TAG.findall(text)
        if tags:
            nums = _ANY_NUMBER.findall(tags[-1])
            value = nums[0] if len(nums) == 1 else None
        else:
            value = untagged(text)
        if value is None:
            return None
        v = float(value)
    except (ValueError, OverflowError, RecursionError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def parse_answer(text, task: str = "depth") -> float | None:
    """The predicted value for ``task`` in its unit, or None when there is no usable answer. Never raises.

    Rules, in order: the content of the last <answer>...</answer> if it is exactly one number; else the last
    number followed by the task's unit ("3.47 meters", "3.5m", "2.5 m/s", "3 seconds"); else the whole text if
    it is one bare number. A unitless task (brightness) takes the text's last number. The value must be finite
    and positive (the ratio metrics cannot score 0)."""
    unit = TASKS[task].unit if task in TASKS else "m"
    return _parse(text, _with_unit(unit) if unit else _last_number)
