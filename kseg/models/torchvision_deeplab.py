"""torchvision's DeepLabV3 (ResNet-50) in Keras, and its published weights converted without PyTorch.

:func:`deeplabv3_resnet50` is ``torchvision.models.segmentation.deeplabv3_resnet50`` layer for layer: torchvision's
ResNet-50 (:func:`kseg.detection.resnet_fpn.resnet50_layers`) with layer3 and layer4 dilated (output stride 8),
then ``DeepLabHead``: ASPP (a 1x1 convolution, 3x3 convolutions at rates 12, 24, 36, and image pooling: global
average, 1x1 convolution, broadcast back; each with batch norm and ReLU), a 1x1 projection to 256 with batch norm,
ReLU and dropout 0.5, a 3x3 convolution with batch norm and ReLU, a 1x1 classifier, and the scores resized
bilinearly x8 to the input (``align_corners=False``). Layers are named after torchvision's module paths
(``backbone.layer1.0.conv1`` -> ``layer1_0_conv1``, ``classifier.0.convs.1.0`` -> ``classifier_0_convs_1_0``), so
:func:`load_torchvision_deeplab` converts a checkpoint by name (:func:`kseg.models.timm_weights.assign_state`); the
auxiliary FCN head of the published files (``aux_classifier``) is not built and is skipped.

The published weights (``DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1``: trained on a COCO subset with the
20 Pascal VOC categories, mIoU 66.4 / pixel accuracy 92.4 on COCO val2017 as torchvision reports them) are the
preset ``deeplabv3-resnet50-voc`` (:mod:`kseg.models.presets`).
"""

from __future__ import annotations

import keras
from keras import layers

from kseg.models.layers import FusedBatchNormalization, head
from kseg.models.resampling import ResizeLike

ASPP_RATES = (12, 24, 36)


def _conv_bn_relu(x, filters, kernel, name, dilation=1):
    x = layers.Conv2D(filters, kernel, padding="same", dilation_rate=dilation, use_bias=False, name=f"{name}_0")(x)
    x = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}_1")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def deeplabv3_resnet50(num_classes: int = 21, input_shape=(None, None, 3), activation: str | None = "softmax",
                       name: str = "deeplabv3_resnet50") -> keras.Model:
    """torchvision's ``deeplabv3_resnet50`` (without its auxiliary head) on raw RGB in [0, 255]; sizes are
    multiples of 8 (kseg's rule, multiples of 32, keeps them so)."""
    from kseg.detection.resnet_fpn import resnet50_layers
    from kseg.models.layers import check_input_shape

    inputs = keras.Input(check_input_shape(input_shape), name="image")
    x = resnet50_layers(inputs, dilate=(False, True, True), frozen=False)[-1]
    branches = [_conv_bn_relu(x, 256, 1, "classifier_0_convs_0")]
    branches += [_conv_bn_relu(x, 256, 3, f"classifier_0_convs_{i}", rate) for i, rate in enumerate(ASPP_RATES, 1)]
    pool = layers.GlobalAveragePooling2D(keepdims=True, name="classifier_0_convs_4_0")(x)
    pool = layers.Conv2D(256, 1, use_bias=False, name="classifier_0_convs_4_1")(pool)
    pool = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name="classifier_0_convs_4_2")(pool)
    pool = layers.ReLU(name="classifier_0_convs_4_relu")(pool)
    branches.append(ResizeLike(name="classifier_0_convs_4_upsampling")([pool, x]))
    y = layers.Concatenate(name="classifier_0_concat")(branches)
    y = _conv_bn_relu(y, 256, 1, "classifier_0_project")
    y = layers.Dropout(0.5, name="classifier_0_project_dropout")(y)
    y = layers.Conv2D(256, 3, padding="same", use_bias=False, name="classifier_1")(y)
    y = FusedBatchNormalization(epsilon=1e-5, momentum=0.9, name="classifier_2")(y)
    y = layers.ReLU(name="classifier_3")(y)
    outputs = head(y, num_classes, activation, kernel_size=1, name="classifier_4", upsample=8)
    return keras.Model(inputs, outputs, name=name)


def load_torchvision_deeplab(model: keras.Model, path) -> None:
    """Set every weight of ``model`` from torchvision's DeepLabV3 checkpoint at ``path`` (a ``.pth``, read without
    PyTorch, or the same tensors in a ``.safetensors`` file; all or nothing, errors in one line naming the file)."""
    from kseg.models.timm_weights import assign_state, read_checkpoint

    state = {k.removeprefix("backbone."): v for k, v in read_checkpoint(path).items()}
    assign_state([layer for layer in model.layers if layer.weights], state, str(path),
                 skip_prefixes=("aux_classifier.",))
