"""A PNG grid of built samples: the marked image as the model gets it, the prompt and the answer."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlkit.builder import Sample  # noqa: E402


def save_preview(samples: list[Sample], out: str | Path, columns: int = 4, zoom_marker: bool = True) -> Path:
    rows = -(-len(samples) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, s in zip(axes.flat, samples):
        ax.imshow(s.image, interpolation="nearest")
        if zoom_marker:  # a ring around the queried pixel, outside the image the model sees
            ax.add_patch(plt.Circle((s.query.x, s.query.y), radius=max(s.image.size) * 0.06 + 8,
                                    fill=False, color="yellow", lw=1))
        title = f"{s.record.dataset}  {s.image.size[0]}x{s.image.size[1]}\nQ: {s.question}\nA: {s.answer}"
        ax.set_title("\n".join(textwrap.fill(line, 48) for line in title.split("\n")), fontsize=7, loc="left")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_samples(samples: list[Sample], out: str | Path) -> Path:
    """The exact model inputs, for inspection and external tools: one PNG per sample and samples.jsonl
    (image_file relative to OUT, source_image, pixel in the original image, pixel_transformed after the
    camera transform, prompt and answer)."""
    import json

    from rlkit.io import atomic_write_text

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, s in enumerate(samples):
        name = f"images/{k:06d}.png"
        s.image.save(out / name)
        extra = {}
        if len(s.images) > 1:  # camera_motion: the pair view, as the model gets it second
            extra["pair_image_file"] = f"images/{k:06d}_pair.png"
            s.images[1].save(out / extra["pair_image_file"])
        x, y = s.record.pixels[s.label]
        lines.append(json.dumps({"image_file": name, **extra, "source_image": str(s.record.image),
                                 "source": s.record.source, "task": s.query.task,
                                 "pixel": [float(x), float(y)], "pixel_transformed": [s.query.x, s.query.y],
                                 "prompt": s.question, "answer": s.answer}))
    atomic_write_text(out / "samples.jsonl", "".join(line + "\n" for line in lines))
    return out / "samples.jsonl"
