"""Instance and panoptic segmentation: the parts Mask R-CNN and Panoptic FPN are made of.

Boxes are ``(x1, y1, x2, y2)`` in pixels of the (resized) input image, float32, following
torchvision's conventions (area ``(x2 - x1) * (y2 - y1)``, no +1). Functions work on one image
with fixed shapes (padded inputs carry a validity mask), so they run inside a Keras graph,
save with a model and export; ``keras.ops.map`` runs them over a batch.
"""
