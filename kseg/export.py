"""Export a trained model: a SavedModel that serves images of any size (and a TFLite file), or the same in ONNX,
OpenVINO or LiteRT.

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

``--format onnx|openvino|litert`` writes the same serving function (uint8 images of any size and batch in,
the same outputs) as one ``.onnx`` file, an OpenVINO ``.xml`` (+ ``.bin``) or a LiteRT ``.tflite`` file, through
Keras's own exporter (``--out`` gets the suffix when it has none); ``kseg predict --model FILE`` runs them
(:mod:`kseg.runtimes`; install the runtime with ``pip install 'kseg[onnx]'``, ``[openvino]``, ``[litert]``).
``--int8 --calibration IMAGES...`` (openvino, litert) quantizes to int8 after training, calibrated on up to
``--calibration-count`` of those images (:mod:`kseg.quantization`).

A multi-scale model (``kseg train --multiscale``) serves its trained scales; ``--scales 0.5,1,2`` serves
others, merged by its own attention (hierarchical: any two or more, or one for the trunk alone; explicit
attention: only the trained set). Other models refuse ``--scales`` in one line: test-time augmentation is
``kseg predict``'s.

An instance model (``--model maskrcnn-coco`` or a Mask R-CNN's ``.keras`` file) exports as a SavedModel only: one
uint8 image (H, W, 3) in; ``boxes``, ``classes``, ``scores`` and ``masks`` (N, H, W) out
(:mod:`kseg.detection.serving`).

Serving in Python::

    serve = tf.saved_model.load(DIR).signatures["serving_default"]
    out = serve(images=tf.constant(batch_uint8))   # {"probabilities", "class_map"} or {"probabilities", "mask"}
"""

from __future__ import annotations

import sys
import time

from kseg.commandline import command_parser
from kseg.errors import KsegError, cli_entry
from kseg.saving import load_keras_model as load_model  # noqa: F401  (kseg.export.load_model, as before)
# the library this command runs; every name stays importable from kseg.export
from kseg.serving import (BINARY_THRESHOLD, FORMATS, TFLITE_NAME, export_model, export_saved_model,  # noqa: F401
                          export_tflite, serving_fn)
from kseg.shapes import MULTIPLE, fixed_input_size, nearest_multiple  # noqa: F401


def parse_args(argv=None):
    from kseg.quantization import CALIBRATION_COUNT

    p = command_parser("kseg.export", __doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a .keras model file, a pretrained segmenter (deeplabv3-resnet50-voc, "
                                                  "segformer-b0-ade20k, ...) or the instance preset maskrcnn-coco")
    p.add_argument("--out", required=True, help="the SavedModel folder to write, or the .onnx, .xml or .tflite "
                                                "file (the suffix is added when missing)")
    p.add_argument("--format", choices=FORMATS, default="saved_model",
                   help="saved_model (a folder, with model.tflite inside), onnx, openvino or litert "
                        "(default: saved_model)")
    p.add_argument("--int8", action="store_true", help="openvino, litert: quantize to int8 after training, "
                                                       "calibrated on --calibration (default: float32)")
    p.add_argument("--calibration", nargs="+", default=None, metavar="IMAGES",
                   help="--int8: training images, folders of them, or a dataset folder holding images/ "
                        "(default: none)")
    p.add_argument("--calibration-count", type=int, default=CALIBRATION_COUNT, metavar="N",
                   help=f"--int8: calibrate on at most N of those images, picked at random "
                        f"(default: {CALIBRATION_COUNT})")
    p.add_argument("--no-tflite", action="store_true", help=f"saved_model: do not write {TFLITE_NAME} "
                                                            f"(default: write it)")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep batch norms as separate ops (default: those after a convolution are folded into it)")
    p.add_argument("--scales", default=None, metavar="SCALES",
                   help="a multi-scale model (kseg train --multiscale): the scales its attention merges in the "
                        "export, e.g. 0.5,1,2 (default: its trained scales)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    if args.no_tflite and args.format != "saved_model":
        raise KsegError(f"--no-tflite is for --format saved_model (a {args.format} export writes no {TFLITE_NAME})")
    if args.int8 and args.format not in ("openvino", "litert"):
        raise KsegError(f"--int8 is for --format openvino or litert, not {args.format}")
    if args.int8 and not args.calibration:
        raise KsegError("--int8 needs calibration images: give --calibration with training images")
    if args.calibration and not args.int8:
        raise KsegError("--calibration is for --int8: add --int8 (and --format openvino or litert)")
    return args


def with_export_scales(model, scales, path):
    """``model`` at ``--scales`` (a multi-scale model's own merge; see :func:`kseg.models.multiscale.at_scales`);
    ``model`` itself without them; a one-line KsegError for another model."""
    if scales is None:
        return model
    from kseg.inference import parse_scales
    from kseg.models.multiscale import at_scales, is_multiscale

    if not is_multiscale(model):
        raise KsegError(f"{path}: --scales is for a multi-scale model (kseg train --multiscale); this model has "
                        f"one scale: test-time scales are kseg predict's --scales")
    scales = parse_scales(scales)
    at = at_scales(model, scales)
    print(f"kseg: exporting at scales {','.join(f'{s:g}' for s in scales)}", flush=True)
    return at


@cli_entry
def main(argv=None):
    args = parse_args(argv)
    from kseg.detection.serving import export_instance_command

    done = export_instance_command(args)  # None: not an instance model
    if done is not None:
        return done
    from kseg.models.presets import is_preset, load_preset

    model = with_export_scales(load_preset(args.model)[0] if is_preset(args.model) else load_model(args.model),
                               args.scales, args.model)
    calibration = None
    if args.int8:
        from kseg.quantization import calibration_images

        calibration = calibration_images(args.calibration, args.calibration_count)
    t0 = time.time()
    out = export_model(model, args.out, args.format, tflite=not args.no_tflite, fold_bn=not args.no_fold_bn,
                       int8=args.int8, calibration=calibration)
    if args.format == "saved_model":
        extra = "" if args.no_tflite else f" and {out / TFLITE_NAME}"
        print(f"kseg: wrote SavedModel {out}{extra} in {time.time() - t0:.1f}s")
    else:
        what = f"{'int8 ' if args.int8 else ''}{args.format}"
        extra = f" (calibrated on {len(calibration)} images)" if calibration else ""
        print(f"kseg: wrote {what} model {out}{extra} in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
