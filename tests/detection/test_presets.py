"""The maskrcnn-coco preset: torchvision's checkpoint downloaded once (offline here: a local HTTP server serves a
.pth written without torch), checked by its SHA-256 prefix, converted, and predicting as the weights loaded directly."""

import hashlib
import http.server
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "fixtures" / "torchvision"
sys.path[:0] = [str(FIXTURES), str(HERE)]
import maskrcnn_state as state  # noqa: E402
from torch_writer import write_torch_zip  # noqa: E402

from kseg.detection import torchvision_weights as tw  # noqa: E402
from kseg.detection.presets import PRESETS, load_preset  # noqa: E402
from kseg.detection.torch_pickle import read_state_dict  # noqa: E402
from kseg.errors import KsegError  # noqa: E402


def test_the_writer_writes_what_torch_wrote(tmp_path):
    """The test's writer, fed what torch's own tiny_zip.pth holds, gives a file read back the same."""
    torch_made = read_state_dict(FIXTURES / "tiny_zip.pth")
    write_torch_zip(tmp_path / "w.pth", torch_made)
    ours = read_state_dict(tmp_path / "w.pth")
    assert sorted(ours) == sorted(torch_made)
    for key, value in torch_made.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        np.testing.assert_array_equal(ours[key], value)


def test_unknown_preset():
    with pytest.raises(KsegError, match=r"unknown model preset 'maskrcnn-voc': choose one of maskrcnn-coco"):
        load_preset("maskrcnn-voc")
    assert PRESETS["maskrcnn-coco"].class_names[1] == "person" and len(PRESETS["maskrcnn-coco"].class_names) == 91


@pytest.fixture
def served(tmp_path):
    """A local HTTP server serving one seeded random Mask R-CNN checkpoint: ``(url, requests, state dict)``."""
    sd = state.random_state(state.load_shapes())
    folder = tmp_path / "www"
    folder.mkdir()
    tmp = folder / "upload.pth"
    write_torch_zip(tmp, sd)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"maskrcnn_test-{digest[:8]}.pth"
    tmp.rename(folder / name)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{name}", requests, sd
    server.shutdown()
    server.server_close()


def test_preset_downloads_once_checks_and_predicts_as_the_weights(served, tmp_path, monkeypatch):
    from kseg.detection.maskrcnn import MaskRCNN
    from kseg.detection.predictor import InstancePredictor

    url, requests, sd = served
    monkeypatch.setitem(tw.SOURCES, "coco", tw.TorchFile(url, "backbone.body."))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.delenv("KSEG_WEIGHTS_DIR", raising=False)
    model, names, preset = load_preset("maskrcnn-coco")
    cached = tmp_path / "keras-home" / "models" / url.rsplit("/", 1)[1]
    assert requests == ["/" + cached.name] and cached.is_file()
    assert tw.fetch("coco") == str(cached) and len(requests) == 1  # the second time from the cache

    direct = MaskRCNN(91)
    direct.build((None, None, None, 3))
    tw.load_state_dict(direct, sd)
    photo = state.random_photo()
    got = InstancePredictor(model, names, 96, 160).predict(photo)
    want = InstancePredictor(direct, names, 96, 160).predict(photo)
    assert len(got.scores) == len(want.scores) > 0
    np.testing.assert_array_equal(got.classes, want.classes)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-6)
    np.testing.assert_allclose(got.masks, want.masks, atol=1e-5)
    assert got.names[0] == names[got.classes[0]]

    with open(cached, "r+b") as f:  # a corrupted (or truncated, or replaced) file in the cache is refused
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(KsegError) as err:
        tw.fetch("coco")
    assert str(err.value) == (f"{cached}: its SHA-256 does not start with {url[-12:-4]} as the official file's "
                              f"does; delete it or download {url} again")
    assert len(requests) == 1
