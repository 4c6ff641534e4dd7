"""The images an evaluation scores: loading the data for a model, and choosing the images.

The library under ``kseg.evaluate``. :func:`load_folder` reads the user's own images and masks
(:func:`kseg.data.folder`), :func:`folder_classes` checks their classes against the model's output
(a binary model needs two-class masks), :func:`run_positions` finds a run's validation images by id
(``run.json`` ``val_ids``), :func:`split_positions` makes the split from options, and
:func:`check_training_overlap` warns when the images scored include the run's training images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from kseg.errors import KsegError

NO_IGNORE = -1  # ignore_index when the run's masks have no ignore value (run.json "ignore_index": null)


def ignore_index_option(text):
    """``--ignore-index`` as kseg.train reads it; 'none' is :data:`NO_IGNORE` (None means not given)."""
    from kseg.training.config import parse_ignore_index

    value = parse_ignore_index(text)
    return NO_IGNORE if value is None else value


def load_folder(data, class_names=None, ignore_index=None, palette=None, limit=None, binary: bool | None = None):
    """:func:`kseg.data.folder` with the options it accepts (``binary`` on kseg versions that have it).

    ``ignore_index`` None means kseg's default (255); :data:`NO_IGNORE` means masks without an ignore value.
    ``palette`` is passed on when it is a file."""
    import inspect

    from kseg.data import folder

    ignore = 255 if ignore_index is None else None if ignore_index == NO_IGNORE else ignore_index
    kwargs = {"class_names": class_names, "ignore_index": ignore, "limit": limit}
    if palette and Path(palette).is_file():
        kwargs["palette"] = palette
    if "binary" in inspect.signature(folder).parameters:
        kwargs["binary"] = binary
    return folder(data, **kwargs)


def _some(names) -> str:
    return f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"


def folder_classes(ds, names, binary: bool, channels, model_path, data) -> list[str]:
    """The class names to score folder dataset ``ds`` with, checked against the model's ``channels``.

    A binary model needs masks of two classes (background, foreground); a multi-class model as many
    classes as it predicts (a folder whose classes are only numbered gets the missing numbers)."""
    class_names = list(ds.class_names)
    if binary:
        if getattr(ds, "binary", None) is False or len(class_names) > 2:
            raise KsegError(f"{data}: the model is binary (one output channel) but the masks hold "
                            f"{len(class_names)} classes ({_some(class_names)})")
        return class_names if len(class_names) == 2 else (names or ["background", "foreground"])
    if channels is not None and len(class_names) != channels:
        if names is None and len(class_names) < channels and all(
                n == f"class{i}" for i, n in enumerate(class_names)):
            class_names += [f"class{i}" for i in range(len(class_names), channels)]
        else:
            raise KsegError(f"{model_path}: the model predicts {channels} classes but {data} has "
                            f"{len(class_names)} ({_some(class_names)}): is this the run's data?")
    return class_names


def pick(ds, val_ids, limit, load_again):
    """Positions in ``ds`` of the run's validation ids; reloads without ``limit`` when some are missing."""
    pos = {ident: i for i, ident in enumerate(ds.ids)}
    missing = [v for v in val_ids if v not in pos]
    if missing and limit is not None:
        ds = load_again()
        pos = {ident: i for i, ident in enumerate(ds.ids)}
        missing = [v for v in val_ids if v not in pos]
    idx = np.array(sorted(pos[v] for v in val_ids if v in pos), np.int64)
    return ds, idx, missing


def run_positions(ds, val_ids, limit, load_again):
    """``(ds, positions)`` of the run's validation images (:func:`pick`); a warning names those missing,
    an error says when none is there."""
    ds, idx, missing = pick(ds, val_ids, limit, load_again)
    if len(idx) == 0:
        raise KsegError(f"{ds.root}: none of the run's {len(val_ids)} validation images (run.json "
                        f"val_ids, e.g. {val_ids[0]}) is here: pass the run's data with --data")
    if missing:
        print(f"kseg: warning: {len(missing)} of the run's {len(val_ids)} validation images are not in "
              f"{ds.root} (e.g. {missing[0]}): scoring the {len(idx)} found", file=sys.stderr, flush=True)
    return ds, idx


def split_positions(ds, split: str = "val", fold=None, val_split: float = 0.2, seed: int = 42) -> np.ndarray:
    """Positions of the images to score: every image (``split`` "all"), fold ``fold``'s validation
    images, else the validation part of kseg's seeded split."""
    from kseg.data import split_indices

    if split == "all":
        return np.arange(len(ds))
    if fold is not None:
        from kseg.data import fold_indices

        return fold_indices(ds.ids, fold)[1]
    return split_indices(len(ds), val_split, seed)[1]


def check_training_overlap(ids, train_ids) -> int | None:
    """How many of ``ids`` are the run's training images (None when those are unknown), with a warning."""
    if train_ids is None:
        return None
    train = set(map(str, train_ids))
    count = sum(str(i) in train for i in ids)
    if count:
        print(f"kseg: warning: {count} of the {len(ids)} images scored are training images of this run "
              f"(run.json train_ids): the scores overstate how the model does on new images",
              file=sys.stderr, flush=True)
    return count


def batches(ds, idx, num_classes: int, size, batch_size: int):
    """``(images, labels)`` NumPy batches of the images at ``idx``, resized to ``size`` (the training pipeline)."""
    from kseg.data import make_dataset

    data = make_dataset([ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx], num_classes,
                        size, batch_size, sparse=True)
    return ((x.numpy(), y.numpy()) for x, y in data)


def load_data(data_format: str, data, *, mask=None, cache_dir=None, limit=None, names=None, ignore_index=None,
              palette=None, binary: bool = False, channels=None, model_path=None):
    """``(dataset, class names, label, load)`` of iccv09 data (``mask``) or folder data checked against a
    model of ``channels`` outputs (:func:`folder_classes`); ``load(limit)`` loads it again with another limit."""
    from kseg.data import CLASS_NAMES, load_iccv09

    if data_format == "folder":
        flag = True if binary else (False if channels is not None and channels > 2 else None)

        def load(limit=limit):
            return load_folder(data, names, ignore_index, palette, limit, flag)

        ds = load()
        class_names = folder_classes(ds, names, binary, channels, model_path, data)
        return ds, class_names, Path(str(data)).name or str(data), load

    def load(limit=limit):
        return load_iccv09(data, mask=mask, cache_dir=cache_dir, limit=limit)

    return load(), list(CLASS_NAMES[mask]), mask, load


def scoring_batches(predict, minfo: dict, ds, idx, num_classes: int, size, batch_size: int, native: bool = False,
                    scales=None, flip: bool = False, model_path=None):
    """``(predict, batches, how, scales)``: the images at ``idx`` resized to ``size``, or with ``native`` at
    their own resolution through a :class:`kseg.inference.Predictor` of ``scales`` and ``flip`` (a ``.keras``
    model only: ``minfo`` from :func:`kseg.inference.load_predictor`; an ONNX, OpenVINO or LiteRT export at
    native resolution without scales or flips); ``how`` says which, for the terminal."""
    if not native:
        return predict, batches(ds, idx, num_classes, size, batch_size), f"at {size[0]}x{size[1]}", None
    from kseg.evaluation import native_batches, native_predict
    from kseg.inference import parse_scales
    from kseg.models.multiscale import at_scales

    from kseg.inference import multiscale_split

    if minfo["format"] in ("onnx", "openvino", "litert") and parse_scales(scales or "1") == (1.0,) and not flip:
        # an ONNX, OpenVINO or LiteRT export takes each image at its own size and resizes inside
        data = native_batches([ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx])
        return predict, data, f"at native resolution ({minfo['format']} export, resized inside)", (1.0,)
    if minfo["format"] != "keras":
        what = "a SavedModel" if minfo["format"] == "saved_model" else \
            f"a {minfo['format']} export (it takes --native alone)"
        raise KsegError(f"{model_path}: --native, --scales and --flip need a .keras model, not {what}")
    tta, own = multiscale_split(minfo["model"], scales or "1", scales is not None)
    scales = own or parse_scales(scales or "1")
    model = minfo["model"] if own is None else at_scales(minfo["model"], own)
    predict = native_predict(model, tta, flip, size)
    data = native_batches([ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx])
    how = (f"at native resolution (model input {size[0]}x{size[1]}, {'its attention over ' if own else ''}scales "
           f"{','.join(f'{v:g}' for v in scales)}{', flips' if flip else ''})")
    return predict, data, how, scales


def per_scale_scores(minfo: dict, ds, idx, num_classes: int, size, batch_size: int, native: bool = False,
                     scales=None, flip: bool = False, threshold: float = 0.5, binary: bool = False):
    """A multi-scale model's trunk alone at each of its scales (``scales``, else the trained ones), scored as
    :func:`scoring_batches` scores the merged prediction: ``{"per_scale": {scale: {"pixel_accuracy", "miou"}}}``,
    said in one line; ``{}`` for any other model."""
    from kseg.evaluation import evaluate, native_batches, native_predict
    from kseg.metrics import scores
    from kseg.models.multiscale import info, is_multiscale, single_scale

    model = minfo.get("model")
    if model is None or not is_multiscale(model):
        return {}
    out = {}
    for s in sorted(set(scales or info(model)["scales"])):
        m = single_scale(model, s)
        if native:
            predict = native_predict(m, (1.0,), flip, size)
            data = native_batches([ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx])
        else:
            predict, data = (lambda x, m=m: np.asarray(m.predict_on_batch(x))), batches(ds, idx, num_classes, size,
                                                                                        batch_size)
        cm = evaluate(predict, data, num_classes, worst=0, threshold=threshold, binary=binary)["cm"]
        sc = scores(cm, [str(i) for i in range(len(cm))])
        out[f"{s:g}"] = {"pixel_accuracy": sc["pixel_accuracy"], "miou": sc["miou"]}
    print("kseg: each scale alone: " + ", ".join(f"{k} mIoU {v['miou']:.4f}" for k, v in out.items()), flush=True)
    return {"per_scale": out}


def folder_names(args, binary: bool, model_path) -> list[str] | None:
    """The class names given for folder data (None: the data's); a binary model takes two."""
    from kseg.training.config import parse_classes  # the same names (or file) as kseg.train takes

    names = parse_classes(args.classes) if isinstance(args.classes, str) else (list(args.classes) if args.classes
                                                                                 else None)
    if binary and names is not None and len(names) != 2:
        raise KsegError(f"{model_path}: a binary model has two classes (background, foreground) but "
                        f"{len(names)} class names were given: {', '.join(names)}")
    return names
