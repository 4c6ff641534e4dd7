"""Backbones: networks that only extract feature maps, keyed by their stride.

``features(name, inputs, weights=None, output_stride=None)`` runs backbone
``name`` on a Keras tensor of raw RGB in [0, 255] and returns ``{stride: tensor}``;
the backbone's preprocessing is part of the graph. Decoders pick what they need:
U-Net takes every stride, FCN strides 8/16/32, DeepLabV3+ 4 and 32, and so on.

With ``output_stride`` 16 or 8 the backbone is *atrous*: the downsampling past
that stride is removed and the later convolutions are dilated instead (DeepLab),
so the keys name the level (2, 4, 8, 16, 32) and the deeper levels stay at the
output stride's resolution. The weights are the same either way.

- ``plain``: the U-Net paper's encoder, two 3x3 conv-BN-ReLU per level, 64 to
  1024 filters, strides 1 to 16 (4 poolings); given an ``output_stride`` it adds
  a fifth pooling and a level at stride 32 (another 1024 filters);
- ``resnet18`` / ``resnet34``: the ResNet v1 layout of segmentation_models'
  encoders (``bn_data`` input normalisation, pre-activation residual blocks),
  so kseg's U-Net matches ``sm.Unet`` layer for layer; strides 2 to 32;
  ``weights="imagenet"`` loads segmentation_models' ImageNet weights and a path
  a Keras 2 HDF5 file in their layout (:mod:`kseg.models.weights`);
- ``vgg16``, ``resnet50``, ``mobilenetv2``, ``efficientnetb0``: built on
  ``keras.applications`` (a nested sub-model named ``<backbone>_encoder``), so
  ``weights="imagenet"`` loads the official ImageNet weights (Keras downloads
  them once into ``$KERAS_HOME/models``) and a path loads that file. vgg16 also
  gives stride 1. Their preprocessing (``caffe`` mean subtraction and BGR order
  for vgg16/resnet50, [-1, 1] for mobilenetv2, EfficientNet's own
  normalisation) sits in front as Keras layers. Other input channel counts
  work with ``weights=None``.

The code lives in :mod:`kseg.models.backbone_registry` (the registry, :func:`features`,
:func:`encoder`), :mod:`kseg.models.resnets` (plain, resnet18/34),
:mod:`kseg.models.applications` (the keras.applications networks),
:mod:`kseg.models.sm_encoders` (segmentation_models' encoders for kseg.sm) and
:mod:`kseg.models.rebuild` (:func:`atrous`); every name is importable from here.
"""

from __future__ import annotations

import os  # noqa: F401

import keras  # noqa: F401
from keras import layers  # noqa: F401

from kseg.errors import KsegError  # noqa: F401
from kseg.models.applications import (_APPLICATIONS, _CAFFE_MEAN_RGB, _IMAGENET_MEAN_RGB,  # noqa: F401
                                      _IMAGENET_STD_RGB, _application, _load_application, _preprocess,
                                      _register_application)
from kseg.models.backbone_registry import (BACKBONES, OUTPUT_STRIDES, POOLING_BACKBONES, check_levels,  # noqa: F401
                                           encoder, encoder_layers, encoder_skips, features, list_backbones,
                                           load_encoder_weights, register)
from kseg.models.layers import (BilinearUpSampling2D, FusedBatchNormalization, MaxUnpooling2D,  # noqa: F401
                               ResizeLike, ReverseChannels, UpsampleConv2D, set_weights)
from kseg.models.rebuild import (_POOLS, _RESAMPLING, _STRIDED, _UPSAMPLING, _atrous_copy,  # noqa: F401
                                 _graph_strides, _key, atrous)
from kseg.models.resnets import _BN, _CONV, _conv3x3, _residual_block, _resnet, plain, resnet18, resnet34  # noqa: F401
from kseg.models.sm_encoders import (_RESNET_FEATURES, _SM_APPLICATIONS, _SM_INDEX_SHIFT,  # noqa: F401
                                     _SM_RESNETS, SM_FEATURE_LAYERS, SmOptionError, _bottleneck_block,
                                     _bottleneck_resnet, _constant_normalization, _sm_layer, sm_backbones,
                                     sm_encoder, sm_encoder_skips)
