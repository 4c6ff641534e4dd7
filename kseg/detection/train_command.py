"""``kseg train --arch maskrcnn|panoptic_fpn --coco TRAIN.json``: train an instance or panoptic model.

``kseg train`` hands its command line here when ``--arch`` names an instance architecture; the
library function is :func:`kseg.detection.fit.fit_instances`, whose docstring says what a run writes.
"""

from __future__ import annotations

from kseg.commandline import command_parser
from kseg.detection.fit import ARCHS, InstanceTrainConfig


def wants_instances(argv) -> bool:
    """Whether ``argv`` (kseg train's arguments) names an instance architecture with ``--arch`` / ``--model``."""
    argv = list(argv or [])
    for i, arg in enumerate(argv):
        for flag in ("--arch", "--model"):
            if arg == flag and i + 1 < len(argv) and argv[i + 1] in ARCHS:
                return True
            if arg.startswith(flag + "=") and arg.split("=", 1)[1] in ARCHS:
                return True
    return False


def parser():
    d = InstanceTrainConfig(coco="")
    p = command_parser("kseg.train", "Train Mask R-CNN or Panoptic FPN on a COCO instance dataset "
                                     "(kseg shapes writes one; kseg import converts LabelMe and CVAT).")
    p.add_argument("--arch", "--model", dest="arch", choices=ARCHS, required=True, help="the architecture")
    p.add_argument("--coco", required=True, help="the training split's COCO instances JSON")
    p.add_argument("--images", default=None, help="its images (default: images/ beside the JSON)")
    p.add_argument("--val-coco", default=None, help="the validation split's COCO instances JSON (scored every "
                                                     "--eval-every epochs; best.keras is the best one)")
    p.add_argument("--backbone", default=d.backbone, help="the backbone under the FPN (resnet50 is torchvision's)")
    p.add_argument("--weights", default=d.weights, help="backbone weights: imagenet or none")
    p.add_argument("--size", type=int, default=d.size, help="square training size, a multiple of 32")
    p.add_argument("--batch", type=int, default=d.batch, help="images per step")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam's learning rate")
    p.add_argument("--max-instances", type=int, default=d.max_instances, help="instances kept per image")
    p.add_argument("--eval-every", type=int, default=d.eval_every, help="epochs between validation scores")
    p.add_argument("--out", default=None, help="the run folder (default: runs/<arch>-<backbone>)")
    p.add_argument("--seed", type=int, default=d.seed, help="shuffling, augmentation and sampling seed")
    p.add_argument("--light", action="store_true", help="a lighter model for small data and CPUs: FPN 128 wide, fewer "
                                                        "proposals and RoIs, anchors from 16 px (kseg.detection.fit.LIGHT)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.keras")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def config(argv=None) -> InstanceTrainConfig:
    """The :class:`InstanceTrainConfig` of a command line (checked)."""
    from kseg.errors import KsegError

    from kseg.detection.fit import LIGHT

    args = vars(parser().parse_args(argv))
    args.pop("debug")
    args["model_settings"] = dict(LIGHT) if args.pop("light") else {}
    if args["size"] % 32 or args["size"] <= 0:
        raise KsegError(f"bad --size {args['size']}: give a positive multiple of 32, e.g. 512")
    for name in ("batch", "epochs", "max_instances", "eval_every"):
        if args[name] < 1:
            raise KsegError(f"bad --{name.replace('_', '-')} {args[name]}: give a positive number")
    args["out"] = args["out"] or f"runs/{args['arch']}-{args['backbone']}"
    return InstanceTrainConfig(**args)


def main(argv=None) -> int:
    from kseg.detection.fit import fit_instances

    metrics = fit_instances(config(argv))
    best = metrics.get("best")
    print(f"kseg: trained {metrics.get('epochs_done')} epochs" + (f", best validation score {best:.4f}" if best
                                                                   is not None else ""))
    return 0
