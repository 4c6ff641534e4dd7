"""Mask R-CNN's training step: its five losses on a batch, as torchvision computes them in training mode.

:func:`maskrcnn_losses` runs the RPN on every anchor, makes each image's anchor targets
(:func:`kseg.detection.targets.rpn_targets`), takes proposals with the training sizes
(``train_pre_nms_top_n`` / ``train_post_nms_top_n``; no gradient flows through them, as torchvision
detaches them), samples RoIs with the ground truth appended (:func:`~kseg.detection.targets.roi_targets`),
runs the box head on the sampled RoIs and the mask head on the first ``max_mask_rois`` of them (the
positives), with mask targets RoI-aligned from the ground-truth masks at 28x28. The losses are averaged
over the whole batch as torchvision does (the sampled anchors / RoIs of all images together).

:func:`instance_inputs` turns :func:`kseg.data.instances.instance_dataset`'s ``(image, targets)`` into the
model's training input (one dict), and :func:`fit_settings` compiles a model the way it trains.
"""

from __future__ import annotations

from keras import ops

from kseg.detection.losses import box_head_loss, mask_loss, rpn_loss
from kseg.detection.masks import mask_targets
from kseg.detection.targets import roi_targets, rpn_targets

MASK_SIZE = 28


def _flat(t, last=()):
    return ops.reshape(t, (-1, *last))


def maskrcnn_losses(model, images, levels, sizes, targets) -> dict:
    """``{"rpn_objectness", "rpn_box", "classifier", "box", "mask"}`` scalars for a batch (module docstring)."""
    s = model.settings
    gt_boxes = ops.cast(targets["boxes"], "float32")
    gt_classes = ops.cast(targets["classes"], "int32")
    gt_masks = targets["masks"]
    crowd = targets.get("crowd")
    crowd = ops.zeros_like(gt_classes, "bool") if crowd is None else ops.cast(crowd, "bool")
    real = gt_classes > 0  # crowd rows included: the matcher ignores what matches them best
    levels, obj, deltas, anchors, level_ids = model.rpn_outputs(images, levels)

    labels, reg, pos, neg = ops.map(
        lambda a: rpn_targets(anchors, a[0], a[1], a[2], model.rpn_coder, model.seed_generator, s["rpn_batch"]),
        (gt_boxes, real, crowd))
    rpn_obj, rpn_box = rpn_loss(_flat(obj), _flat(deltas, (4,)), _flat(labels), _flat(reg, (4,)), _flat(pos),
                                _flat(neg))

    obj_d, deltas_d = ops.stop_gradient(obj), ops.stop_gradient(deltas)
    props, pvalid = ops.map(lambda a: model.proposals(a[0], a[1], anchors, level_ids, a[2], training=True),
                            (obj_d, deltas_d, sizes))
    rois, rlabels, rreg, sampled, gt_index = ops.map(
        lambda a: roi_targets(a[0], a[1], a[2], a[3], a[4], model.box_coder, model.seed_generator, s["roi_batch"],
                              s["roi_positive_fraction"]), (props, pvalid, gt_boxes, gt_classes, crowd))
    logits, box_deltas = model.box_head(model._pool(levels, rois, 7))
    cls_loss, box_loss = box_head_loss(logits, _flat(box_deltas, (4 * model.num_classes,)), _flat(rlabels),
                                       _flat(rreg, (4,)), _flat(sampled))

    m = min(s["max_mask_rois"], rois.shape[1]) if rois.shape[1] is not None else s["max_mask_rois"]
    mask_rois, mask_labels, mask_gt = rois[:, :m], rlabels[:, :m], gt_index[:, :m]
    positive = ops.logical_and(sampled[:, :m], mask_labels > 0)
    mask_logits = model.mask_head(model._pool(levels, mask_rois, 14))
    mtargets = ops.map(lambda a: mask_targets(a[0], a[1], a[2], MASK_SIZE), (gt_masks, mask_rois, mask_gt))
    m_loss = mask_loss(mask_logits, _flat(mtargets, (MASK_SIZE, MASK_SIZE)), _flat(mask_labels), _flat(positive))
    return {"rpn_objectness": rpn_obj, "rpn_box": rpn_box, "classifier": cls_loss, "box": box_loss, "mask": m_loss}


def instance_inputs(image, targets) -> dict:
    """``(image, targets)`` from :func:`kseg.data.instances.instance_dataset` -> the model's training input."""
    return {"image": image, **targets}
