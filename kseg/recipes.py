"""Named training presets: ``python -m kseg.train --recipe NAME``.

A recipe is a set of ``kseg.train`` options; any option also given on the
command line wins (``--recipe regions-mobilenetv2 --epochs 5``). Each is meant
to finish within 2 hours on a 2-core CPU and evaluates on iccv09 fold 0
(the shipped 5-fold split, 572 train / 143 validation images) unless ``--fold``
says otherwise. What each one scored, and how long it took on which CPU, is in
docs/results.md.

- ``regions-mobilenetv2``: the 8 semantic classes, DeepLabV3+ on the ImageNet
  MobileNetV2 encoder (trained from the first epoch), 256x320 (about the
  photos' native 240x320), scale/flip/colour augmentation, AdamW with 1 epoch
  of warm-up then cosine decay, BatchNorm momentum 0.9, 30 epochs with a moving average of the
  weights (``--ema 0.99``), evaluated at native resolution with multi-scale (0.5 to 1.5 by 0.25) and
  flip test-time augmentation.
- ``surfaces-mobilenetv2``: the same for the 3 geometric classes, with the encoder frozen for the first
  3 epochs, 20 epochs, no weight averaging, scales 0.75, 1, 1.25.
- ``surfaces-fast`` and ``regions-fast``: the shortest way to a good model on a laptop CPU (what
  bench/time_to_accuracy.py times): the same DeepLabV3+ on the ImageNet MobileNetV2 encoder at 192x256,
  flips only, a third of an epoch of warm-up then cosine decay over 4 (surfaces) or 8 (regions) epochs,
  evaluated once at native resolution.
- ``regions-scratch``: the 8 classes with no pretrained weights (DeepLabV3+ on
  MobileNetV2, randomly initialised), 70 epochs at 224x288.
- ``regions-segformer``: SegFormer-B0 on NVIDIA's ImageNet MiT-B0, as the SegFormer paper fine-tunes it
  (AdamW, weight decay 0.01, the decoder at 6e-4 and the encoder at a tenth of it, poly decay after a
  warm-up epoch), otherwise as ``regions-mobilenetv2`` (256x320, strong augmentation, 30 epochs, ``--ema
  0.99``, five test scales and flips).
- ``regions-hrnet``: HRNetV2-W18-Small-v2 on timm's ImageNet weights, with ``regions-mobilenetv2``'s
  training and evaluation.

The last two need their ImageNet files (downloaded once from the Hugging Face hub, or given with
``--encoder-weights FILE``); their scores on iccv09 are not measured yet (docs/results.md says why).
"""

from __future__ import annotations

from kseg.errors import KsegError

_FINETUNE = dict(model="deeplabv3plus", backbone="mobilenetv2", encoder_weights="imagenet", freeze_epochs=0,
                 size="256x320", batch_size=8, optimizer="adamw", lr=1e-3, weight_decay=1e-4, schedule="cosine",
                 warmup=1.0, bn_momentum=0.9, augment="strong", loss="ce", monitor="val_miou", fold=0, eval_scales="0.75,1,1.25",
                 eval_flip=True)

RECIPES = {
    "regions-mobilenetv2": dict(_FINETUNE, mask="regions", epochs=30, ema=0.99, eval_scales="0.5,0.75,1,1.25,1.5"),
    "surfaces-mobilenetv2": dict(_FINETUNE, mask="surfaces", freeze_epochs=3, epochs=20),
    "surfaces-fast": dict(_FINETUNE, mask="surfaces", size="192x256", augment="flip", warmup=0.3, epochs=4,
                          eval_scales="1", eval_flip=False),
    "regions-fast": dict(_FINETUNE, mask="regions", size="192x256", augment="flip", warmup=0.3, epochs=8,
                         eval_scales="1", eval_flip=False),
    "regions-scratch": dict(_FINETUNE, mask="regions", encoder_weights=None, epochs=70, size="224x288"),
    "regions-segformer": dict(_FINETUNE, mask="regions", model="segformer", backbone="mit_b0", lr=6e-4,
                              encoder_lr_mult=0.1, weight_decay=1e-2, schedule="poly", epochs=30, ema=0.99,
                              eval_scales="0.5,0.75,1,1.25,1.5"),
    "regions-hrnet": dict(_FINETUNE, mask="regions", model="hrnet", backbone="hrnet_w18_small_v2", epochs=30,
                          ema=0.99, eval_scales="0.5,0.75,1,1.25,1.5"),
}


def get(name: str) -> dict:
    """The options of recipe ``name``."""
    try:
        return dict(RECIPES[name])
    except KeyError:
        raise KsegError(f"unknown --recipe {name!r}: choose one of {', '.join(RECIPES)}") from None
