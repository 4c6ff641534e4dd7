"""bench/models.py's FLOP count: a convolution and an einsum counted by hand."""

import pytest
from conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("models")


def test_gflops_counts_a_convolution_and_an_einsum(bench):
    import keras
    from keras import ops

    class Mix(keras.layers.Layer):  # (N, 8, 8, 4) x (4, 5) over the channels, as an einsum
        def build(self, shape):
            self.w = self.add_weight(shape=(4, 5))

        def call(self, x):
            return ops.einsum("nhwc,cd->nhwd", x, self.w)

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    model = keras.Model(inputs, Mix()(x))
    conv = 2 * 8 * 8 * 3 * 3 * 3 * 4
    einsum = 2 * 8 * 8 * 4 * 5
    assert bench.gflops(model, (8, 8, 3)) * 1e9 == pytest.approx(conv + einsum)


def test_sizes_and_pairs(bench):
    assert bench.parse_size("256x320") == (256, 320) and bench.parse_size(224) == (224, 224)
    pairs = bench.all_pairs()
    assert ("segformer", "mit_b0") in pairs and ("hrnet", "hrnet_w18_small_v2") in pairs
    assert ("segnet", "resnet34") not in pairs and len(pairs) == len(set(pairs))
