"""PSPNet (Zhao et al., CVPR 2017): a pyramid pooling module on a dilated backbone.

The backbone runs atrous at output stride 8 (the paper's; 16 and 32 also work).
Its last feature map is average-pooled to 1x1, 2x2, 3x3 and 6x6 bins, each
reduced by a 1x1 conv-BN-ReLU to 1/4 of the channels, upsampled bilinearly back
and concatenated to the feature map; a 3x3 conv-BN-ReLU (512), dropout 0.1 and
a 1x1 classifier follow, and the scores are upsampled bilinearly to the input.
The optional auxiliary head (the paper's deep supervision, loss weight 0.4)
classifies the stride-16 level (``res4`` in a ResNet) the same way and is the
model's second output.

Adaptive pooling and the bilinear resize of the bins are kseg layers written
with ``keras.ops`` that take the size at run time, so PSPNet builds at any
multiple of 32 and at (None, None) -- not only at multiples of 48 as in
segmentation_models, whose pooling needs the feature size to divide by 6.
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models import backbones as bb
from kseg.models.layers import AdaptiveAveragePooling, ResizeLike, conv_bn_relu, head


def pspnet(num_classes: int, backbone: str = "resnet50", input_shape=(None, None, 3), encoder_weights=None,
           encoder_freeze: bool = False, activation: str | None = "softmax", output_stride: int = 8,
           bins=(1, 2, 3, 6), pool_filters: int | None = None, filters: int = 512, aux: bool = False,
           dropout: float = 0.1, backbone_kwargs: dict | None = None, name: str | None = None):
    """Build a PSPNet.

    Args:
        output_stride: 8 (paper), 16 or 32: the backbone's atrous output stride.
        bins: the pyramid's grid sizes.
        pool_filters: filters of each pyramid branch; default channels / len(bins).
        filters: the 3x3 convolution after the concatenation (paper: 512).
        aux: add the auxiliary head as a second output ``aux`` (for training;
            compile with ``loss_weights=[1.0, 0.4]``).
        dropout: before each classifier.
        backbone_kwargs: extra arguments for the backbone.
        The others as for :func:`kseg.models.unet`.
    """
    inputs, feats = bb.encoder(backbone, input_shape, encoder_weights, encoder_freeze, backbone_kwargs,
                               output_stride=output_stride)
    x = feats[32]
    pool_filters = pool_filters or max(1, int(x.shape[-1]) // len(bins))
    branches = [x]
    for b in bins:
        y = AdaptiveAveragePooling(b, name=f"psp_pool{b}")(x)
        y = conv_bn_relu(y, pool_filters, 1, name=f"psp_bin{b}")
        branches.append(ResizeLike(name=f"psp_bin{b}_upsampling")([y, x]))
    x = layers.Concatenate(name="psp_concat")(branches)
    x = conv_bn_relu(x, filters, 3, name="psp_conv")
    x = layers.Dropout(dropout, name="psp_dropout")(x)
    outputs = head(x, num_classes, activation, kernel_size=1, upsample=output_stride)
    if aux:
        a = conv_bn_relu(feats[16], 256, 3, name="aux_conv")
        a = layers.Dropout(dropout, name="aux_dropout")(a)
        a = head(a, num_classes, activation, kernel_size=1, upsample=min(16, output_stride), name="aux_final_conv",
                 output_name="aux")
        outputs = [outputs, a]
    return keras.Model(inputs, outputs, name=name or f"pspnet_{backbone}")


def pspnet_sm(num_classes: int, backbone: str = "vgg16", input_shape=(384, 384, 3), encoder_weights=None,
              encoder_freeze: bool = False, activation: str | None = "softmax", downsample_factor: int = 8,
              conv_filters: int = 512, pooling: str = "avg", batchnorm: bool = True, dropout: float | None = None,
              name: str | None = None):
    """segmentation_models' PSPNet (``kseg.sm.PSPNet``): the encoder cut at ``downsample_factor``, no atrous layers.

    The backbone runs only up to its feature layer at stride ``downsample_factor``
    (4, 8 or 16; segmentation_models' default layers); that map is pooled
    (average or max) to 1x1, 2x2, 3x3 and 6x6 bins with fixed pool sizes, each bin
    through a 1x1 conv-BN-ReLU (``conv_filters``) and upsampled bilinearly back;
    the concatenation goes through a 1x1 conv-BN-ReLU (``conv_filters``), optional
    spatial dropout, a 3x3 classifier and a bilinear upsampling by
    ``downsample_factor``. The pool sizes are fixed, so the input size is too:
    height and width multiples of ``6 * downsample_factor``.
    """
    from kseg.models.backbones import SM_FEATURE_LAYERS, SmOptionError, sm_encoder

    levels = {16: 0, 8: 1, 4: 2}
    if downsample_factor not in levels:
        raise SmOptionError(f"downsample_factor must be 4, 8 or 16, got {downsample_factor!r}")
    if pooling not in ("avg", "max"):
        raise SmOptionError(f"psp_pooling_type must be 'avg' or 'max', got {pooling!r}")
    input_shape = tuple(input_shape)
    unit = 6 * downsample_factor
    if len(input_shape) != 3 or any(v is None or int(v) <= 0 or int(v) % unit for v in input_shape[:2]):
        raise SmOptionError(f"PSPNet input_shape {input_shape}: height and width must be multiples of {unit} "
                            f"(6 x downsample_factor {downsample_factor})")
    layer = SM_FEATURE_LAYERS.get(backbone, (None,) * 3)[levels[downsample_factor]]
    inputs, _, (x,), _ = sm_encoder(backbone, input_shape, encoder_weights, encoder_freeze, [layer], top=False)
    pool = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
    branches = [x]
    for level in (1, 2, 3, 6):
        size = (int(x.shape[1]) // level, int(x.shape[2]) // level)
        y = pool(size, strides=size, padding="same", name=f"psp_level{level}_pooling")(x)
        y = conv_bn_relu(y, conv_filters, 1, use_batchnorm=batchnorm, name=f"psp_level{level}")
        branches.append(layers.UpSampling2D(size, interpolation="bilinear", name=f"psp_level{level}_upsampling")(y))
    x = layers.Concatenate(name="psp_concat")(branches)
    x = conv_bn_relu(x, conv_filters, 1, use_batchnorm=batchnorm, name="aggregation")
    if dropout is not None:
        x = layers.SpatialDropout2D(dropout, name="spatial_dropout")(x)
    outputs = head(x, num_classes, activation, kernel_size=3, upsample=downsample_factor)
    return keras.Model(inputs, outputs, name=name or f"pspnet_{backbone}")
