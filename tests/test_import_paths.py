"""The split data and loss modules: old import paths, Keras names, and TensorFlow kept out of ``kseg import``."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "fixtures"


def _imports_tensorflow(*args) -> bool:
    """Whether ``python -X importtime ARGS`` imports the tensorflow package (it exits 0)."""
    r = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout
    return any(line.split("|")[-1].strip() == "tensorflow" for line in r.stderr.splitlines())


@pytest.mark.parametrize("args", [["-m", "kseg.data.annotations", "--help"], ["-m", "kseg", "import", "--help"]])
def test_kseg_import_help_does_not_load_tensorflow(args):
    assert not _imports_tensorflow(*args)


def test_the_pipeline_names_still_load_tensorflow():
    """The check above can fail: a command that uses the pipeline does import TensorFlow."""
    code = "import kseg.data as d, sys; d.make_dataset; print('usage:', 'tensorflow' in sys.modules)"
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert r.stdout.strip() == "usage: True", r.stderr[-2000:]


OLD_NAMES = {
    "kseg.data": ["CLASS_NAMES", "MASKS", "Iccv09", "extract_archive", "find_iccv09", "load_iccv09",
                  "parse_label_text", "read_label_file", "verify_layout", "IGNORE_INDEX", "NUM_FOLDS", "check_size",
                  "fold_indices", "iccv09_folds", "make_dataset", "repeat_factors", "split_datasets",
                  "split_indices", "to_one_hot", "to_sparse", "FolderDataset", "folder", "folder_datasets",
                  "match_files", "read_mask", "read_palette", "write_palette", "iccv09_datasets"],
    "kseg.data.iccv09": ["URL", "ARCHIVE_NAME", "FOLDER_NAME", "CLASS_NAMES", "MASKS", "CACHE_VERSION", "Iccv09",
                         "find_iccv09", "download_archive", "extract_archive", "verify_layout", "parse_label_text",
                         "read_label_file", "default_cache_dir", "load_labels", "image_size", "check_image",
                         "skip_unreadable", "load_iccv09", "shutil"],
    "kseg.data.folder": ["IMAGE_EXTS", "MASK_EXTS", "MASK_SUFFIXES", "IGNORE_NAMES", "MAX_CLASSES",
                         "MAX_AUTO_COLORS", "RARE_PIXELS", "GIVEN", "FolderDataset", "read_palette", "write_palette",
                         "read_mask", "match_files", "folder", "folder_datasets", "_factorize"],
    "kseg.data.annotations": ["IGNORE_ID", "FORMATS", "BACKGROUND_NAMES", "LABELME_SHAPES", "LINE_WIDTH",
                              "voc_colormap", "import_labelme", "import_cvat", "import_coco", "detect_format",
                              "import_annotations", "main"],
    "kseg.data.pipeline": ["IGNORE_INDEX", "MULTIPLE", "check_size", "nearest_multiples", "SizeError", "to_sparse",
                           "to_one_hot", "to_binary", "split_indices", "decode_image", "make_dataset",
                           "split_datasets", "class_repeat_factors", "image_repeat_factors"],
    "kseg.losses": ["EPSILON", "SegmentationLoss", "CategoricalCrossentropy", "FocalLoss", "RegionLoss", "DiceLoss",
                    "JaccardLoss", "TverskyLoss", "FocalTverskyLoss", "LovaszSoftmaxLoss", "BinaryCrossentropy",
                    "BinaryFocalLoss", "LovaszHingeLoss", "SumLoss", "LOSSES", "ALIASES", "get"],
}


@pytest.mark.parametrize("module", sorted(OLD_NAMES))
def test_every_old_name_imports_from_its_old_path(module):
    import importlib

    mod = importlib.import_module(module)
    assert [n for n in OLD_NAMES[module] if not hasattr(mod, n)] == []


def test_kseg_data_folder_is_the_loader_function_after_the_submodule_loads():
    import kseg.data
    import kseg.data.folder  # noqa: F401 (the submodule, loaded)
    from kseg.data import folder

    assert callable(folder) and folder.__name__ == "folder"
    assert kseg.data.pipeline.make_dataset is kseg.data.make_dataset
    with pytest.raises(AttributeError):
        kseg.data.no_such_name  # noqa: B018


def test_loss_classes_keep_their_registered_names_and_module():
    import keras

    from kseg import losses

    for cls in [*losses.LOSSES.values(), losses.SumLoss]:
        assert keras.saving.get_registered_name(cls) == f"kseg>{cls.__name__}"
        config = keras.saving.serialize_keras_object(cls() if cls is not losses.SumLoss
                                                     else losses.DiceLoss() + losses.FocalLoss())
        assert (config["module"], config["registered_name"]) == ("kseg.losses", f"kseg>{cls.__name__}")


@pytest.mark.parametrize("name", ["old_names_multiclass.keras", "old_names_binary.keras"])
def test_a_model_saved_before_the_split_loads_and_computes_its_loss(name):
    """The files were saved by kseg before losses.py became a package (config module ``kseg.losses``)."""
    import keras

    import kseg  # noqa: F401 (registers kseg's classes)

    path = DATA / name
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    assert config["compile_config"]["loss"]["module"] == "kseg.losses"
    model = keras.saving.load_model(path)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    channels = model.output_shape[-1]
    y = (np.eye(3, dtype="float32")[np.random.default_rng(1).integers(0, 3, (2, 8, 8))] if channels == 3
         else np.random.default_rng(1).integers(0, 2, (2, 8, 8, 1)).astype("float32"))
    assert type(model.loss).__name__ == "SumLoss"
    assert np.isfinite(float(model.evaluate(x, y, verbose=0, return_dict=True)["loss"]))
