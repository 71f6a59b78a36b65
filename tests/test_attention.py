"""The kit's varlen attention (rlkit.attention) gives SDPA's numbers: on raw tensors (packed segments, a
padding-free batch, a padded batch, a cached generation step), and through the tiny Qwen2.5-VL (vision windows,
a left-padded text batch) for logits and gradients."""

from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rlkit import attention
from rlkit.attention import NAME, switch_to_varlen, varlen_attention


class _Module:
    def __init__(self, causal: bool, groups: int = 1):
        self.is_causal, self.num_key_value_groups = causal, groups


def _loop(q, k, v, cu, causal):
    """The reference: one SDPA call per segment, as transformers' vision tower loops."""
    outs = []
    for a, b in zip(cu[:-1].tolist(), cu[1:].tolist()):
        outs.append(F.scaled_dot_product_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], is_causal=causal))
    return torch.cat(outs, dim=2).transpose(1, 2)


@pytest.mark.parametrize("causal", [False, True])
def test_packed_segments_equal_one_call_per_segment(causal):
    torch.manual_seed(0)
    cu = torch.tensor([0, 5, 6, 19, 27], dtype=torch.int32)  # lengths 5, 1, 13, 8
    q, k, v = (torch.randn(1, 3, 27, 8, requires_grad=True) for _ in range(3))
    out, _ = varlen_attention(_Module(causal), q, k, v, cu_seq_lens_q=cu, is_causal=causal)
    ref = _loop(q, k, v, cu, causal)
    assert out.shape == ref.shape == (1, 27, 3, 8)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    g = torch.autograd.grad(out.square().sum(), (q, k, v))
    g_ref = torch.autograd.grad(ref.square().sum(), (q, k, v))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_padding_free_positions_and_grouped_heads():
    torch.manual_seed(1)
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]])  # two sequences packed in one row
    q = torch.randn(1, 4, 8, 8)
    k, v = torch.randn(1, 2, 8, 8), torch.randn(1, 2, 8, 8)  # 2 KV heads for 4 query heads
    out, _ = varlen_attention(_Module(True, groups=2), q, k, v, position_ids=position_ids)
    ref = _loop(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), torch.tensor([0, 3, 8]), True)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)


def test_padded_batch_and_a_cached_generation_step():
    torch.manual_seed(2)
    q, k, v = (torch.randn(2, 2, 6, 8) for _ in range(3))
    pad = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # left padding in row 0
    out, _ = varlen_attention(_Module(True), q, k, v, attention_mask=pad)
    for row, start in ((0, 2), (1, 0)):
        ref = F.scaled_dot_product_attention(q[row:row + 1, :, start:], k[row:row + 1, :, start:],
                                             v[row:row + 1, :, start:], is_causal=True).transpose(1, 2)
        torch.testing.assert_close(out[row:row + 1, start:], ref, atol=1e-6, rtol=1e-5)
    # one new query against 6 cached keys: it sees every key but row 0's two padded ones
    step, _ = varlen_attention(_Module(True), q[:, :, -1:], k, v, attention_mask=pad)
    for row, start in ((0, 2), (1, 0)):
        ref = F.scaled_dot_product_attention(q[row:row + 1, :, -1:], k[row:row + 1, :, start:],
                                             v[row:row + 1, :, start:]).transpose(1, 2)
        torch.testing.assert_close(step[row:row + 1], ref, atol=1e-6, rtol=1e-5)


def _batch(processor):
    """Two prompt-completion rows whose images differ in size (several vision windows, a padded text batch)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    texts, images = [], []
    for w, h, answer in ((112, 84, "3.25"), (252, 140, "11.5")):
        images.append(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How far?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
        texts.append(processor.apply_chat_template(messages, tokenize=False))
    processor.tokenizer.padding_side = "left"
    return processor(images=images, text=texts, padding=True, return_tensors="pt")


def test_tiny_model_logits_and_gradients_equal_sdpa():
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rlkit.tiny import ensure_tiny_model

    path = ensure_tiny_model(".cache/models")
    processor = AutoProcessor.from_pretrained(path)
    batch = _batch(processor)
    assert batch["image_grid_thw"].prod(-1).tolist() == [48, 180]  # 252 x 140 px: more than one 112-px window
    results = {}
    for impl in ("sdpa", NAME):
        torch.manual_seed(0)
        model = AutoModelForImageTextToText.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32)
        if impl == NAME:
            switch_to_varlen(model)
        assert model.model.visual.config._attn_implementation == model.model.language_model.config._attn_implementation \
            == impl
        with mock.patch("rlkit.attention._padded_segments", wraps=attention._padded_segments) as segments:
            out = model(**batch, labels=batch["input_ids"])
        assert segments.call_count == (0 if impl == "sdpa" else 2)  # the two vision blocks, windows in one call each
        out.loss.backward()
        results[impl] = (out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None})
    (logits_a, grads_a), (logits_b, grads_b) = results["sdpa"], results[NAME]
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(logits_b[real], logits_a[real], atol=1e-5, rtol=1e-4)
    assert grads_a.keys() == grads_b.keys() and any("visual" in n for n in grads_a)
    for n in grads_a:
        torch.testing.assert_close(grads_b[n], grads_a[n], atol=1e-5, rtol=1e-4, msg=n)
