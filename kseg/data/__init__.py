"""Data: the iccv09 and folder loaders, the tf.data pipeline and joint augmentation."""

from kseg.data.iccv09 import (CLASS_NAMES, MASKS, Iccv09, extract_archive, find_iccv09,  # noqa: F401
                              load_iccv09, parse_label_text, read_label_file, verify_layout)
from kseg.data.pipeline import (IGNORE_INDEX, NUM_FOLDS, check_size, fold_indices, iccv09_folds,  # noqa: F401
                                make_dataset, repeat_factors, split_datasets, split_indices, to_one_hot, to_sparse)
from kseg.data.folder import (FolderDataset, folder, folder_datasets, match_files, read_mask,  # noqa: F401
                              read_palette, write_palette)


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
    check_size(size)  # a bad size fails before any loading
    ds = load_iccv09(data, mask=mask, cache_dir=cache_dir, limit=limit, quiet=quiet)
    return split_datasets(ds, size, batch_size, val_split, seed, sparse, augment, fold, repeat_threshold)
