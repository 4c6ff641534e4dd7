"""Export a trained model: a SavedModel that serves images of any size, and a TFLite file.

``python -m kseg.export --model best.keras --out DIR`` writes ``DIR`` as a
TensorFlow SavedModel whose ``serving_default`` signature takes ``images``, a
uint8 RGB batch (N, H, W, 3) of any H and W, and returns

- ``probabilities``: float32 (N, H, W, C), per-pixel class probabilities at the input's size;
- ``class_map``: int32 (N, H, W), their argmax.

A binary model (one output channel, ``kseg.models.build(..., num_classes=1, activation="sigmoid")``)
returns instead

- ``probabilities``: float32 (N, H, W, 1), the foreground probability at the input's size;
- ``mask``: uint8 (N, H, W), 1 where ``probabilities >= 0.5`` (:data:`BINARY_THRESHOLD`), else 0
  (another threshold: compare ``probabilities`` with it; ``kseg.predict --threshold`` does).

Inside, the batch is resized (bilinear) to the model's own input size if it
has a fixed one, else to the nearest multiples of 32; the model runs (it
carries its own preprocessing); the probabilities are resized back bilinearly.
A model trained under mixed precision is exported as its float32 copy (the same
weights; bfloat16 serving is emulated, and slow, on CPUs without bfloat16
instructions, and TFLite rejects it). Batch norms that follow a convolution are folded into it (same outputs to
float32 rounding, about 5% faster serving; ``--no-fold-bn`` keeps them).
``DIR/model.tflite`` (inside the SavedModel folder, which TensorFlow ignores)
is the same signature converted with ``tf.lite.TFLiteConverter``; skip it with
``--no-tflite``. ``kseg.train`` calls the same :func:`export_saved_model`.

Serving in Python::

    serve = tf.saved_model.load(DIR).signatures["serving_default"]
    out = serve(images=tf.constant(batch_uint8))   # {"probabilities", "class_map"} or {"probabilities", "mask"}
"""

from __future__ import annotations

import sys
import time

from kseg.commandline import command_parser
from kseg.errors import cli_entry
from kseg.saving import load_keras_model as load_model  # noqa: F401  (kseg.export.load_model, as before)
# the library this command runs; every name stays importable from kseg.export
from kseg.serving import BINARY_THRESHOLD, TFLITE_NAME, export_saved_model, export_tflite, serving_fn  # noqa: F401
from kseg.shapes import MULTIPLE, fixed_input_size, nearest_multiple  # noqa: F401


@cli_entry
def main(argv=None):
    p = command_parser("kseg.export", __doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .keras model file")
    p.add_argument("--out", required=True, help="the SavedModel folder to write")
    p.add_argument("--no-tflite", action="store_true", help=f"do not write {TFLITE_NAME}")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep batch norms as separate ops (by default those after a convolution are folded into it)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    model = load_model(args.model)
    t0 = time.time()
    out = export_saved_model(model, args.out, tflite=not args.no_tflite, fold_bn=not args.no_fold_bn)
    extra = "" if args.no_tflite else f" and {out / TFLITE_NAME}"
    print(f"kseg: wrote SavedModel {out}{extra} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
