"""kseg's Mask R-CNN against torchvision's maskrcnn_resnet50_fpn on the same weights and photos. JSON out.

    python bench/maskrcnn_parity.py --torch-python /path/to/venv-with-torchvision/bin/python \\
        --weights coco photo1.jpg photo2.jpg

torch is never a kseg dependency: torchvision runs in another Python (``--torch-python``, any environment
with torch and torchvision), writes its detections to a temporary ``.npz``, and this script compares them
with kseg's. ``--weights coco`` is torchvision's COCO checkpoint (``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``:
torchvision downloads it into torch's cache and kseg reads that same file, ``$KSEG_WEIGHTS_DIR`` pointing
there, so nothing is fetched twice); ``--weights random`` is the seeded random state of the tests
(tests/fixtures/torchvision/maskrcnn_state.py), which needs no download. Per photo: the number of
detections of each, the largest box difference (pixels), score difference and class disagreement over
the detections both found in the same order, and the mask IoU (p >= 0.5) of each pair, averaged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "torchvision"

TORCH_SIDE = r"""
import sys, numpy as np, torch
from PIL import Image
from torchvision.models.detection import maskrcnn_resnet50_fpn, MaskRCNN_ResNet50_FPN_Weights
weights, out, photos = sys.argv[1], sys.argv[2], sys.argv[3:]
if weights == "coco":
    model = maskrcnn_resnet50_fpn(weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1).eval()
else:
    sys.path.insert(0, sys.argv[0])
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).eval()
    from maskrcnn_state import random_state
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict({k: torch.from_numpy(v) for k, v in random_state(shapes).items()})
res = {}
with torch.no_grad():
    for i, p in enumerate(photos):
        x = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)
        d = model([x])[0]
        res[f"{i}_boxes"], res[f"{i}_scores"] = d["boxes"].numpy(), d["scores"].numpy()
        res[f"{i}_labels"], res[f"{i}_masks"] = d["labels"].numpy(), (d["masks"][:, 0] >= 0.5).numpy()
np.savez_compressed(out, **res)
"""


def torchvision_detections(python: str, weights: str, photos: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "tv.npz"
        code = TORCH_SIDE.replace("sys.path.insert(0, sys.argv[0])", f"sys.path.insert(0, {str(FIXTURES)!r})")
        subprocess.run([python, "-c", code, weights, str(out), *photos], check=True)
        import numpy as np

        return dict(np.load(out))


def kseg_model(weights: str):
    if weights == "coco":
        from kseg.detection.maskrcnn import maskrcnn

        os.environ.setdefault("KSEG_WEIGHTS_DIR", str(Path.home() / ".cache" / "torch" / "hub" / "checkpoints"))
        return maskrcnn(weights="coco")
    sys.path.insert(0, str(FIXTURES))
    from maskrcnn_state import load_shapes, random_state

    from kseg.detection.maskrcnn import MaskRCNN
    from kseg.detection.torchvision_weights import load_state_dict

    model = MaskRCNN(91)
    model.build((None, None, None, 3))
    load_state_dict(model, random_state(load_shapes()))
    return model


def compare(tv: dict, i: int, found) -> dict:
    import numpy as np

    n = min(len(tv[f"{i}_scores"]), len(found.scores))
    row = {"torchvision": int(len(tv[f"{i}_scores"])), "kseg": int(len(found.scores)), "compared": n}
    if n:
        masks_tv, masks_k = tv[f"{i}_masks"][:n], found.masks[:n] >= 0.5
        inter = (masks_tv & masks_k).reshape(n, -1).sum(1)
        union = (masks_tv | masks_k).reshape(n, -1).sum(1)
        row.update(max_box_diff=float(np.abs(tv[f"{i}_boxes"][:n] - found.boxes[:n]).max()),
                   max_score_diff=float(np.abs(tv[f"{i}_scores"][:n] - found.scores[:n]).max()),
                   class_disagreements=int((tv[f"{i}_labels"][:n] != found.classes[:n]).sum()),
                   mean_mask_iou=float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0))))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("photos", nargs="+", help="photos to compare on")
    p.add_argument("--torch-python", required=True, help="a Python with torch and torchvision")
    p.add_argument("--weights", choices=("coco", "random"), default="coco", help="the weights both sides use")
    args = p.parse_args(argv)
    import numpy as np
    from PIL import Image

    from kseg.detection.predictor import InstancePredictor

    tv = torchvision_detections(args.torch_python, args.weights, args.photos)
    predictor = InstancePredictor(kseg_model(args.weights))
    # both sides decode with PIL: JPEG decoders (PIL's, OpenCV's) differ by a few levels per pixel
    rows = [{"photo": photo, **compare(tv, i, predictor.predict(np.asarray(Image.open(photo).convert("RGB"))))}
            for i, photo in enumerate(args.photos)]
    print(json.dumps({"bench": "maskrcnn_parity", "weights": args.weights, "photos": rows}))


if __name__ == "__main__":
    main()
