"""Data: the iccv09 and folder loaders, the tf.data pipeline and joint augmentation."""

from kseg.data.iccv09 import (CLASS_NAMES, MASKS, Iccv09, extract_archive, find_iccv09,  # noqa: F401
                              load_iccv09, parse_label_text, read_label_file, verify_layout)
from kseg.data.pipeline import (IGNORE_INDEX, check_size, make_dataset, split_indices,  # noqa: F401
                                to_one_hot, to_sparse)
from kseg.data.folder import FolderDataset, folder, folder_datasets, read_palette  # noqa: F401


def iccv09_datasets(data=None, mask="surfaces", size=(224, 224), batch_size=16, val_split=0.2,
                    seed=42, sparse=False, augment=None, limit=None, cache_dir=None, quiet=True):
    """The iccv09 train and validation datasets plus the loaded :class:`Iccv09` and split.

    Returns ``(train_ds, val_ds, info)`` where ``info`` is a dict with ``dataset``
    (:class:`Iccv09`), ``train_idx``, ``val_idx`` and ``steps_per_epoch``.
    ``train_ds`` repeats without end; pass ``steps_per_epoch`` to ``fit``.
    """
    from kseg.data import augment as aug

    size = check_size(size)
    ds = load_iccv09(data, mask=mask, cache_dir=cache_dir, limit=limit, quiet=quiet)
    train_idx, val_idx = split_indices(len(ds), val_split, seed)
    pick = lambda idx: ([ds.image_paths[i] for i in idx], [ds.labels[i] for i in idx])  # noqa: E731
    train = make_dataset(*pick(train_idx), ds.num_classes, size, batch_size, sparse=sparse, training=True,
                         augment=aug.get(augment) if isinstance(augment, str) else augment, seed=seed)
    val = make_dataset(*pick(val_idx), ds.num_classes, size, batch_size, sparse=sparse) if len(val_idx) else None
    steps = -(-len(train_idx) // batch_size)
    return train, val, {"dataset": ds, "train_idx": train_idx, "val_idx": val_idx, "steps_per_epoch": steps}
