"""Import annotations made with LabelMe, CVAT or a COCO tool into kseg's folder layout.

Every importer writes the layout that :func:`kseg.data.folder` reads::

    OUT/images/<stem>.<ext>     the images, hard-linked (or copied) from the source, never moved
    OUT/masks/<stem>.png        indexed ("P") PNGs: pixel value = class id, 255 = unknown;
                                the PNG's palette holds the class colours
    OUT/classes.txt             one class name a line, line i = id i (id 0 = background)
    OUT/palette.json            {"name": [r, g, b], ...} in id order

Sources:

- :func:`import_labelme`: a folder of LabelMe ``.json`` files. Shapes (polygon,
  rectangle, circle, line, linestrip, mask) are painted in file order, later
  shapes over earlier ones, as LabelMe does; point shapes mark no region and are
  skipped. Ids: ``labels`` (a list or a labelme2voc ``labels.txt``: ``__ignore__``
  = 255, ``_background_`` = 0, then ids 1, 2, ... in order), else background 0
  and the label names found, sorted.
- :func:`import_cvat`: CVAT's "Segmentation mask 1.1" export (the zip or its
  folder): ``labelmap.txt`` gives names, colours and ids (in its order, the
  background first), ``SegmentationClass/*.png`` the colour masks.
- :func:`import_coco`: a COCO instance or stuff JSON: categories sorted by id
  become ids 1..K (0 = background); polygons and RLE masks are decoded with
  ``pycocotools``; larger instances are painted first, smaller ones on top;
  crowd regions are unknown (255) unless ``crowd="class"``.
- :func:`import_annotations` detects which of the three a source is.

A label named ``ignore``, ``void``, ``unknown`` or ``unlabeled`` (or LabelMe's
``__ignore__``) marks unknown pixels (255), as in kseg's palette files.
An output folder that exists and is not empty is refused unless
``overwrite=True``, which replaces only its ``images/``, ``masks/``,
``classes.txt`` and ``palette.json``. The import is written into a temporary
folder beside the output and renamed into place at the end, so an interrupted
import leaves no half-written output. Problems with the input raise
:class:`kseg.errors.KsegError` naming the file and the problem.

Modules: :mod:`~kseg.data.annotations.labelme`, :mod:`~kseg.data.annotations.cvat`,
:mod:`~kseg.data.annotations.coco`, :mod:`~kseg.data.annotations.common` (the output
folder), :mod:`~kseg.data.annotations.formats` (detection) and
:mod:`~kseg.data.annotations.cli` (the command line, imported on first use of ``main``).

Command line::

    python -m kseg.data.annotations SRC --out DIR [--format labelme|cvat|coco] [--images DIR]
                                    [--labels FILE] [--crowd ignore|class] [--overwrite]
"""

from kseg.data.annotations.coco import import_coco  # noqa: F401
from kseg.data.annotations.common import BACKGROUND_NAMES, IGNORE_ID, voc_colormap  # noqa: F401
from kseg.data.annotations.cvat import import_cvat  # noqa: F401
from kseg.data.annotations.formats import FORMATS, detect_format, import_annotations  # noqa: F401
from kseg.data.annotations.labelme import LABELME_SHAPES, LINE_WIDTH, import_labelme  # noqa: F401


def __getattr__(name: str):
    """``main`` (the command line) is imported from :mod:`kseg.data.annotations.cli` on first use."""
    if name == "main":
        from kseg.data.annotations.cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
