"""The data of a training run: iccv09 or a folder of images and masks, split and turned into pipelines."""

from __future__ import annotations

import dataclasses
import time

from kseg.errors import KsegError
from kseg.training.config import parse_classes


@dataclasses.dataclass
class TrainingData:
    """What :func:`load_data` returns: ``ds`` (the loaded dataset: ``image_paths``, ``labels``, ``ids``,
    ``class_names``, ``mask``, ``root``...), its training and validation pipelines, and the split's ``info``
    (``train_idx``, ``val_idx``, ``steps_per_epoch``, repeat factors; see :func:`kseg.data.split_datasets`)."""

    ds: object
    train_ds: object
    val_ds: object
    info: dict

    @property
    def binary(self) -> bool:
        """Foreground against background: the model has one sigmoid output."""
        return bool(getattr(self.ds, "binary", False))

    @property
    def train_idx(self):
        return self.info["train_idx"]

    @property
    def val_idx(self):
        return self.info["val_idx"]

    @property
    def steps_per_epoch(self) -> int:
        return self.info["steps_per_epoch"]

    @property
    def skipped(self) -> list:
        """The images the loader could not read."""
        return list(getattr(self.ds, "skipped", []) or [])


def load_data(config) -> TrainingData:
    """Load, split and build the pipelines of the data ``config`` names; say in one line what was loaded (and
    in another what repeat-factor sampling does)."""
    t0 = time.time()
    if config.data_format == "folder":
        train_ds, val_ds, info = _folder_datasets(config)
    else:
        from kseg.data import iccv09_datasets

        train_ds, val_ds, info = iccv09_datasets(config.data, mask=config.mask, size=config.size,
                                                 batch_size=config.batch_size, val_split=config.val_split,
                                                 seed=config.seed, sparse=config.sparse, augment=config.augment,
                                                 limit=config.limit, cache_dir=config.cache_dir, quiet=False,
                                                 fold=config.fold, repeat_threshold=config.repeat_threshold)
    data = TrainingData(info["dataset"], train_ds, val_ds, info)
    print(_loaded_line(config, data, time.time() - t0), flush=True)
    if info.get("repeat_factors") is not None:
        print(f"kseg: repeat-factor sampling (--repeat-threshold {config.repeat_threshold:g}): "
              + repeat_summary(data.ds.class_names, info["class_repeat_factors"], info["class_images"],
                               info["repeat_factors"]), flush=True)
    return data


def _folder_datasets(config):
    from kseg.data import folder
    from kseg.data.pipeline import split_datasets

    opts = {"binary": config.binary} if config.binary is not None else {}
    ds = folder(config.data, class_names=parse_classes(config.classes), palette=config.palette,
                ignore_index=config.ignore_index, limit=config.limit, **opts)
    if getattr(ds, "binary", False) and (config.sparse or config.class_weights != "none"):
        raise KsegError(f"{config.data}: binary masks (foreground against background) train one sigmoid "
                        f"output: --sparse and --class-weights are for multi-class data; for a rare "
                        f"foreground use --loss focal or dice+bce")
    return split_datasets(ds, config.size, config.batch_size, config.val_split, config.seed, config.sparse,
                          config.augment, repeat_threshold=config.repeat_threshold)


def _loaded_line(config, data: TrainingData, seconds: float) -> str:
    ds = data.ds
    classes = (f"binary, {ds.class_names[1]} against {ds.class_names[0]}" if data.binary
               else f"{ds.num_classes} classes")
    fold = f" (fold {config.fold})" if config.fold is not None else ""
    skipped = f" (skipped {len(ds.skipped)} unreadable image(s))" if getattr(ds, "skipped", None) else ""
    return (f"kseg: {len(ds)} images from {ds.root} ({ds.mask}: {classes}), {len(data.train_idx)} train / "
            f"{len(data.val_idx)} validation{fold}, {config.size[0]}x{config.size[1]}, loaded in {seconds:.1f}s"
            f"{skipped}")


def repeat_summary(class_names, class_factors, class_images, image_factors) -> str:
    """One line on what ``--repeat-threshold`` does (the factors :func:`kseg.data.split_datasets` puts in its
    ``info``): each repeated class's factor and image count, and the mean image factor (how much more often a
    training image is drawn, on average)."""
    parts = [f"{name} x{r:.2f} ({n} images)" for name, r, n in zip(class_names, class_factors, class_images)
             if r > 1.0]
    mean = f"; mean image factor {image_factors.mean():.2f}"
    return (", ".join(parts) or "no class is rarer than the threshold") + mean
