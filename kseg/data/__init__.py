"""Data: the iccv09 and folder loaders, the tf.data pipeline and joint augmentation.

The loaders (NumPy and PIL) load with the package; the tf.data pipeline
(:mod:`kseg.data.pipeline`, :mod:`kseg.data.augment`) and its names
(``make_dataset``, ``split_datasets``, ``check_size``, ...) load TensorFlow on
first use, so ``python -m kseg.data.annotations`` never imports it.
"""

import importlib

from kseg.data.iccv09 import (CLASS_NAMES, MASKS, Iccv09, extract_archive, find_iccv09,  # noqa: F401
                              load_iccv09, parse_label_text, read_label_file, verify_layout)
from kseg.data.folder import (FolderDataset, folder, folder_datasets, match_files, read_mask,  # noqa: F401
                              read_palette, write_palette)
from kseg.labels import IGNORE_INDEX, to_one_hot, to_sparse  # noqa: F401

# names of kseg.data.pipeline importable from kseg.data, imported (with TensorFlow) on first use
_PIPELINE = ("NUM_FOLDS", "check_size", "fold_indices", "iccv09_folds", "make_dataset", "repeat_factors",
             "split_datasets", "split_indices")


def __getattr__(name: str):
    """The pipeline's names and the submodules not yet imported, on first use."""
    if name in _PIPELINE:
        value = getattr(importlib.import_module("kseg.data.pipeline"), name)
        globals()[name] = value
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PIPELINE))


def iccv09_datasets(data=None, mask="surfaces", size=(224, 224), batch_size=16, val_split=0.2,
                    seed=42, sparse=False, augment=None, limit=None, cache_dir=None, quiet=True, fold=None,
                    repeat_threshold=0.0):
    """The iccv09 train and validation datasets plus the loaded :class:`Iccv09` and split.

    Returns ``(train_ds, val_ds, info)`` where ``info`` is a dict with ``dataset``
    (:class:`Iccv09`), ``train_idx``, ``val_idx`` and ``steps_per_epoch``. ``fold`` (0-4)
    picks the shipped 5-fold split (572 train / 143 validation) instead of ``val_split``.
    ``repeat_threshold`` > 0 samples training images with rare classes more often (see
    :func:`kseg.data.repeat_factors`).
    ``train_ds`` repeats without end; pass ``steps_per_epoch`` to ``fit``.
    """
    from kseg.data.pipeline import check_size, split_datasets

    check_size(size)  # a bad size fails before any loading
    ds = load_iccv09(data, mask=mask, cache_dir=cache_dir, limit=limit, quiet=quiet)
    return split_datasets(ds, size, batch_size, val_split, seed, sparse, augment, fold, repeat_threshold)
