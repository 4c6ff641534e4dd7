"""``python -m kseg.data.annotations`` / ``kseg import``: the command line."""

from __future__ import annotations

import argparse
import sys

from kseg.data.annotations.formats import FORMATS, detect_format, import_annotations
from kseg.commandline import command_parser
from kseg.errors import KsegError, cli_entry


def _parser() -> argparse.ArgumentParser:
    p = command_parser(
        "kseg.data.annotations",
        "Import LabelMe, CVAT ('Segmentation mask 1.1') or COCO annotations into kseg's folder "
        "layout (images/, masks/, classes.txt, palette.json).")
    p.add_argument("src", help="a folder of LabelMe .json files, a CVAT export (zip or folder) or a COCO .json")
    p.add_argument("--out", required=True, help="the output folder (new or empty)")
    p.add_argument("--format", choices=FORMATS, help="the source's format (default: detected)")
    p.add_argument("--images", help="the images folder (COCO; CVAT exports without images)")
    p.add_argument("--labels", help="LabelMe: a labels file, one class a line (labelme2voc's labels.txt)")
    p.add_argument("--crowd", choices=("ignore", "class"), help="COCO crowd regions: unknown (default) or class")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the output's images/, masks/, classes.txt and palette.json")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _cli_kw(args) -> dict:
    kw = {"overwrite": args.overwrite or None}
    if args.images is not None:
        kw["images"] = args.images
    if args.labels is not None:
        kw["labels"] = args.labels
    if args.crowd is not None:
        kw["crowd"] = args.crowd
    return kw


@cli_entry
def main(argv=None):
    args = _parser().parse_args(argv)
    fmt = args.format or detect_format(args.src)
    flags = {"images": "--images", "labels": "--labels", "crowd": "--crowd"}
    allowed = {"labelme": {"labels"}, "cvat": {"images"}, "coco": {"images", "crowd"}}[fmt]
    for key, flag in flags.items():
        if getattr(args, key) is not None and key not in allowed:
            raise KsegError(f"{flag} does not apply to a {fmt} source ({args.src})")
    import_annotations(args.src, args.out, format=fmt, **_cli_kw(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
