"""A variable-length attention for transformers' ``AttentionInterface``: ``model.attn_implementation: varlen``.

Qwen2.5-VL's vision tower attends within windows given by ``cu_seqlens``. With SDPA or eager it loops in Python
over the windows (one attention call per window: about 100 per image at paper sizes, in 28 of 32 blocks);
transformers passes ``cu_seqlens`` to the attention function itself only when the implementation's name holds
"flash" (``is_flash_attention_requested``). This module registers such a function, ``rlkit_flash_varlen``:

- sequences packed along one axis (vision windows, or a padding-free LM batch whose ``position_ids`` restart)
  run as one batched call: on a GPU through PyTorch's FlashAttention varlen kernel
  (``torch.nn.attention.varlen.varlen_attn``) when this torch has it, else as padded segments through one SDPA
  call with a key mask (any device, any dtype);
- a padded batch (a 2-D padding mask, as transformers builds for flash implementations) and generation with a
  KV cache run through SDPA with the causal and padding masks combined.

The numbers are SDPA's: tests/test_attention.py checks logits and gradients of the tiny model against
``sdpa`` on the same weights and batch; ``./run.sh bench attention`` at Qwen2.5-VL-3B's dimensions.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

NAME = "rlkit_flash_varlen"


def _has_varlen_kernel() -> bool:
    try:
        from torch.nn.attention import varlen  # noqa: F401 - torch >= 2.10
    except ImportError:
        return False
    return True


def _segments_from_positions(position_ids):
    """cu_seqlens of a padding-free batch (one row whose positions restart at 0 for every sequence), else None."""
    import torch

    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    pos = position_ids[0]
    starts = torch.nonzero(pos == 0).flatten()
    if len(starts) <= 1:
        return None
    return torch.cat([starts, torch.tensor([len(pos)], device=pos.device)]).to(torch.int32)


def _padded_segments(query, key, value, cu, causal: bool, scaling: float):
    """Segments of (H, T, D) tensors gathered into (N, H, L, D), attended in one SDPA call, scattered back."""
    import torch
    import torch.nn.functional as F

    cu = cu.to(torch.long)
    lengths = cu[1:] - cu[:-1]
    longest = int(lengths.max())
    steps = torch.arange(longest, device=query.device)
    valid = steps[None, :] < lengths[:, None]  # (N, L)
    index = (cu[:-1, None] + steps[None, :]).clamp(max=query.shape[1] - 1)  # (N, L), padding points anywhere
    q, k, v = (t[:, index].permute(1, 0, 2, 3) for t in (query, key, value))  # (N, H, L, D)
    mask = valid[:, None, None, :]  # keys of the segment only; padded queries are dropped below
    if causal:
        mask = mask & torch.ones(longest, longest, dtype=torch.bool, device=query.device).tril()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)
    return out.permute(0, 2, 1, 3)[valid]  # (T, H, D), in the packed order


def _varlen_kernel(query, key, value, cu, causal: bool, scaling: float):
    import torch
    from torch.nn.attention.varlen import varlen_attn

    cu = cu.to(query.device, dtype=torch.int32)
    longest = int((cu[1:] - cu[:-1]).max())
    q, k, v = (t.transpose(0, 1).contiguous() for t in (query, key, value))  # (T, H, D)
    return varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=(-1, 0) if causal else (-1, -1))


def _masked_sdpa(query, key, value, attention_mask, causal: bool, scaling: float):
    """A (possibly padded) batch: SDPA with the causal mask (offset for a KV cache) and a 2-D padding mask."""
    import torch
    import torch.nn.functional as F

    q_len, k_len = query.shape[2], key.shape[2]
    if attention_mask is not None and attention_mask.dim() == 4:
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask.bool(), scale=scaling)
    mask = None
    if causal and q_len > 1:
        mask = (torch.arange(q_len, device=query.device)[:, None] + (k_len - q_len)
                >= torch.arange(k_len, device=query.device)[None, :])[None, None]
    if attention_mask is not None:
        keys = attention_mask[:, None, None, -k_len:].bool()
        mask = keys if mask is None else mask & keys
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)


def varlen_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, is_causal=None,
                     cu_seq_lens_q=None, position_ids=None, **kwargs):
    """transformers' attention signature: (B, H, T, D) in, ((B, T, H, D), None) out."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    cu = cu_seq_lens_q if cu_seq_lens_q is not None else _segments_from_positions(position_ids)
    if cu is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]:
        if query.is_cuda and _has_varlen_kernel() and query.dtype in (torch.bfloat16, torch.float16):
            out = _varlen_kernel(query[0], key[0], value[0], cu, causal, scaling)
        else:
            out = _padded_segments(query[0], key[0], value[0], cu, causal, scaling)
        return out.unsqueeze(0), None
    return _masked_sdpa(query, key, value, attention_mask, causal, scaling).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the function (and transformers' flash-style 2-D padding mask for it) once; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask

    AttentionInterface.register(NAME, varlen_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, flash_attention_mask)
    return NAME


def switch_to_varlen(model, keep: dict | None = None):
    """Point a loaded model (loaded with ``sdpa``) at the registered function. Not at load time: transformers
    (5.x) then tries to import a FlashAttention package for any name holding "flash" and fails for a registered
    function; the config's setter sets every sub-config (vision tower, LM), which the modules read at each call.
    ``keep``: sub-configs that keep their own, e.g. {"vision_config": "eager"} (a family's official switches)."""
    name = register()
    model.config._attn_implementation = {"": name, **{k: name for k in model.config.sub_configs}, **keep} \
        if keep else name
    return model


def resolve(requested: str | None) -> str | None:
    """The attention implementation to load a model with. ``varlen``: flash-attn's when the package is installed
    (FlashAttention-2 kernels), else the kit's ``rlkit_flash_varlen``; ``auto``: ``varlen`` on a GPU, the
    library default elsewhere, said in one log line. Any other name passes through to transformers."""
    import importlib.util

    import torch

    if requested == "auto":
        if not torch.cuda.is_available():
            log.info("attention: auto -> the library default (no GPU; on CPU the kit's varlen path is opt-in: "
                     "model.attn_implementation=varlen)")
            return None
        requested = "varlen"
    if requested == "varlen":
        if importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
            return "flash_attention_2"
        why = "flash-attn is not installed" if torch.cuda.is_available() else "no GPU"
        kernel = "PyTorch's FlashAttention varlen kernel" if torch.cuda.is_available() and _has_varlen_kernel() \
            else "padded segments through one SDPA call"
        log.info("attention: varlen -> %s (%s; %s)", NAME, why, kernel)
        return NAME
    return requested


def load_kwargs(requested: str | None) -> tuple[str | None, bool]:
    """(the attn_implementation for from_pretrained, whether to switch to the kit's varlen function after)."""
    name = resolve(requested)
    return ("sdpa", True) if name == NAME else (name, False)
