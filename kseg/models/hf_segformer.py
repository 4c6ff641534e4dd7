"""SegFormer and MiT weights from Hugging Face checkpoints (``model.safetensors``) into kseg's SegFormer.

The checkpoints NVIDIA publishes on the Hugging Face hub, ``nvidia/mit-b0`` .. ``mit-b5`` (the ImageNet
encoders, ``SegformerForImageClassification``) and ``nvidia/segformer-b*-finetuned-ade-512-512`` /
``-cityscapes-1024-1024`` (whole segmenters, ``SegformerForSemanticSegmentation``), name their tensors
``segformer.encoder.*``, ``decode_head.*`` and ``classifier.*``; transformers 5 renames some modules when it
loads them (``stages.{i}.blocks``, ``q_proj``, ``linear_projections``, ...), and files it saves may carry
those names: both are read. Each name maps onto one kseg layer (the table in :mod:`kseg.models.mit` and
:mod:`kseg.models.segformer`) and converts as in :mod:`kseg.models.timm_weights` (linear weights
transposed, convolution kernels OIHW -> HWIO, the depthwise (C, 1, 3, 3) -> (3, 3, C, 1), LayerNorm and
BatchNorm to gamma / beta / moving statistics). The official ``kv`` of the NVlabs files is not read: use the
hub's files.

:func:`load_hf_segformer` sets every weight of the layers it is given (the encoder's, or the whole model's)
from the file, or changes nothing and raises a one-line :class:`~kseg.errors.KsegError` naming the file
and the first weight that is missing or has another shape; an ImageNet classifier (``classifier.*``) is
skipped, and so is the decoder when only the encoder is loaded.
"""

from __future__ import annotations

import re

from kseg.models.timm_weights import assign_state, read_checkpoint

# transformers 5's names -> the hub's (transformers' conversion_mapping, reversed)
_V5 = [(r"(^|\.)stages\.(\d+)\.patch_embeddings\.", r"\1encoder.patch_embeddings.\2."),
       (r"(^|\.)stages\.(\d+)\.blocks\.", r"\1encoder.block.\2."),
       (r"(^|\.)stages\.(\d+)\.layer_norm\.", r"\1encoder.layer_norm.\2."),
       (r"attention\.q_proj\.", "attention.self.query."), (r"attention\.k_proj\.", "attention.self.key."),
       (r"attention\.v_proj\.", "attention.self.value."),
       (r"attention\.sequence_reduction\.sequence_reduction\.", "attention.self.sr."),
       (r"attention\.sequence_reduction\.layer_norm\.", "attention.self.layer_norm."),
       (r"attention\.o_proj\.", "attention.output.dense."), (r"mlp\.fc1\.", "mlp.dense1."),
       (r"mlp\.fc2\.", "mlp.dense2."), (r"\.layernorm_before\.", ".layer_norm_1."),
       (r"\.layernorm_after\.", ".layer_norm_2."), (r"decode_head\.linear_projections\.", "decode_head.linear_c.")]

# the hub's module path (after ``segformer.encoder.`` / ``decode_head.``) -> kseg's layer name
_BLOCK = {"layer_norm_1": "norm1", "attention.self.query": "attn_q", "attention.self.key": "attn_k",
          "attention.self.value": "attn_v", "attention.self.sr": "attn_sr",
          "attention.self.layer_norm": "attn_sr_norm", "attention.output.dense": "attn_proj",
          "layer_norm_2": "norm2", "mlp.dense1": "mlp_fc1", "mlp.dwconv.dwconv": "mlp_dwconv", "mlp.dense2": "mlp_fc2"}
_DECODER = {"linear_fuse": "decode_linear_fuse", "batch_norm": "decode_linear_fuse_bn", "classifier": "final_conv"}


def hub_name(key: str) -> str:
    """A tensor's name as the hub's checkpoints have it (transformers 5's names are turned back)."""
    for pattern, repl in _V5:
        key = re.sub(pattern, repl, key)
    return key


def kseg_module(module: str) -> str | None:
    """kseg's layer for the hub's ``module`` (a tensor name without ``.weight`` / ``.bias`` ...); None when
    the module is not part of kseg's SegFormer (an ImageNet classifier)."""
    module = re.sub(r"^segformer\.", "", module)
    if m := re.fullmatch(r"encoder\.patch_embeddings\.(\d)\.(proj|layer_norm)", module):
        return f"patch_embed{int(m[1]) + 1}_{'proj' if m[2] == 'proj' else 'norm'}"
    if m := re.fullmatch(r"encoder\.block\.(\d)\.(\d+)\.(.+)", module):
        part = _BLOCK.get(m[3])
        return f"block{int(m[1]) + 1}_{m[2]}_{part}" if part else module
    if m := re.fullmatch(r"encoder\.layer_norm\.(\d)", module):
        return f"norm{int(m[1]) + 1}"
    if m := re.fullmatch(r"decode_head\.linear_c\.(\d)\.proj", module):
        return f"decode_linear_c{int(m[1]) + 1}"
    if m := re.fullmatch(r"decode_head\.(.+)", module):
        return _DECODER.get(m[1], module)
    if module.startswith("classifier"):
        return None
    return module


def to_kseg_names(state: dict) -> dict:
    """``{kseg_layer.param: tensor}`` for a hub state dict (decode_head keys prefixed ``decode_head:``)."""
    out = {}
    for key, tensor in state.items():
        module, _, param = hub_name(key).rpartition(".")
        layer = kseg_module(module)
        if layer is not None:
            out[f"{'decode_head:' if module.startswith('decode_head.') else ''}{layer}.{param}"] = tensor
    return out


def load_hf_segformer(layers_, path, encoder_only: bool = False) -> None:
    """Set every weight of ``layers_`` from the Hugging Face SegFormer / MiT checkpoint at ``path`` (all or
    nothing). ``encoder_only``: the file's decoder, if any, is skipped (an ImageNet encoder, or a segmenter's
    encoder under a new decoder)."""
    state = to_kseg_names(read_checkpoint(path))
    if encoder_only:
        state = {k: v for k, v in state.items() if not k.startswith("decode_head:")}
    else:
        state = {k.removeprefix("decode_head:"): v for k, v in state.items()}
    assign_state(layers_, state, str(path))
