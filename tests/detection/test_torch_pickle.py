"""kseg reads torch.save files without torch: both formats, every dtype a state dict holds, nothing else."""

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kseg.detection.torch_pickle import read_state_dict
from kseg.errors import KsegError

FIXTURES = Path(__file__).parents[1] / "fixtures" / "torchvision"


@pytest.mark.parametrize("name", ["tiny_zip.pth", "tiny_legacy.pth"])
def test_reads_what_torch_wrote(name):
    """tiny_*.pth were written by torch 2.14 (zip format; legacy format wrapped in {"model": ...})."""
    expected = np.load(FIXTURES / "tiny_expected.npz")
    sd = read_state_dict(FIXTURES / name)
    assert sorted(sd) == sorted(expected.files)
    for key in expected.files:
        assert sd[key].shape == expected[key].shape, key
        np.testing.assert_array_equal(sd[key].astype(expected[key].dtype), expected[key])
    assert sd["fc.weight"].shape == (3, 4)  # a transposed (non-contiguous) tensor comes out as torch saw it
    assert sd["idx"].tolist() == [3, 5, 7, 9]  # a strided view with a storage offset
    assert sd["half"].dtype == np.float16 and sd["n"].shape == ()


def test_refuses_code_in_a_checkpoint(tmp_path):
    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}))
    with pytest.raises(KsegError, match=r"evil\.pth: not a PyTorch checkpoint kseg can read .*does not hold"):
        read_state_dict(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "photo.pth"
    path.write_bytes(b"\x89PNG not a checkpoint")
    with pytest.raises(KsegError, match=r"photo\.pth: not a PyTorch checkpoint"):
        read_state_dict(path)
