"""The figure of docs/multiscale.md: which scale each pixel of a photo trusts, from a multi-scale model.

    .venv/bin/python bench/multiscale_figure.py --model runs/x/best.keras --images a.jpg b.jpg \\
        [--scales 0.5,1,2] [--mask regions] [--out docs/multiscale_attention.png]

One row per photo: the photo, the merged prediction at ``--scales`` (the model's own attention), then each
scale's weight in that merge (white 1, black 0; they sum to 1 at each pixel). Computed as ``kseg predict``
computes them (the photo resized to the model's base size, the maps resized back). ``--stats`` prints, over the
run's validation photos, each scale's mean weight and, where the scales' trunks disagree, how often each
scale is right there and the weight the attention gives it.
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a multi-scale .keras model (kseg train --multiscale)")
    p.add_argument("--images", nargs="+", help="photos, one row each (needed for the figure)")
    p.add_argument("--scales", default="0.5,1,2", help="the inference scales (default 0.5,1,2)")
    p.add_argument("--mask", default="regions", help="the palette's name (default regions)")
    p.add_argument("--out", default="docs/multiscale_attention.png", help="the PNG to write")
    p.add_argument("--stats", action="store_true",
                   help="instead of the figure: JSON over the run's iccv09 validation photos (run.json's val_ids) "
                        "of how the attention weighs the scales where their trunks disagree")
    args = p.parse_args(argv)
    if args.stats:
        return stats(args.model, args.scales)
    if not args.images:
        p.error("give --images (or --stats)")

    import tensorflow as tf

    from kseg import viz
    from kseg.inference import Predictor, flexible, parse_scales, read_image
    from kseg.models.multiscale import attention_maps, info
    from kseg.saving import load_keras_model

    predictor = Predictor(load_keras_model(args.model), model_scales=parse_scales(args.scales))
    scales = info(predictor.model)["scales"]
    net = attention_maps(flexible(predictor.model))
    plt = viz._plt()
    cols = 2 + len(scales)
    fig, axes = plt.subplots(len(args.images), cols, figsize=(2.6 * cols, 2.1 * len(args.images)), squeeze=False)
    for row, path in zip(axes, args.images):
        image = read_image(path)
        h, w = image.shape[:2]
        probs = predictor(image)
        x = tf.image.resize(tf.cast(image[None], tf.float32), predictor.base_size(h, w))
        weights = tf.image.resize(net(x), (h, w)).numpy()[0]
        row[0].imshow(image)
        row[1].imshow(viz.colorize(probs.argmax(-1), probs.shape[-1], args.mask))
        for i, s in enumerate(scales):
            row[2 + i].imshow(weights[..., i], cmap="gray", vmin=0, vmax=1)
        titles = ["photo", "merged prediction"] + [f"weight of scale {s:g}" for s in scales]
        for ax, title in zip(row, titles):
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    names = _class_names(args.model, probs.shape[-1])
    colours = viz.palette(len(names), args.mask) / 255.0
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[k]) for k in range(len(names))]
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 8), frameon=False, fontsize=8)
    fig.subplots_adjust(left=0.01, right=0.91, bottom=0.08, top=0.95, wspace=0.05, hspace=0.25)
    bar = fig.colorbar(axes[0, -1].images[0], cax=fig.add_axes((0.925, 0.25, 0.012, 0.55)))
    bar.set_label("weight of the scale's prediction", fontsize=8)
    viz._save(fig, args.out)
    print(f"wrote {args.out} ({', '.join(f'{s:g}' for s in scales)}; mean weights "
          f"{', '.join(f'{v:.2f}' for v in np.mean(weights, axis=(0, 1)))} on the last photo)")


def stats(model_path, scales_text: str) -> None:
    """Over the run's validation photos: each scale's mean weight, and where the scales' own predictions
    (each trunk alone) disagree, how often each is right and the weight it gets there."""
    import json

    import tensorflow as tf

    from kseg.data import load_iccv09
    from kseg.inference import Predictor, flexible, parse_scales
    from kseg.models.multiscale import attention_maps, info, single_scale
    from kseg.runinfo import read_run_info
    from kseg.saving import load_keras_model

    run = read_run_info(model_path) or {}
    if not run.get("val_ids"):
        raise SystemExit(f"{model_path}: no run.json with val_ids beside it")
    model = load_keras_model(model_path)
    predictor = Predictor(model, model_scales=parse_scales(scales_text))
    scales = info(predictor.model)["scales"]
    net = attention_maps(flexible(predictor.model))
    alone = [Predictor(single_scale(model, s)) for s in scales]
    ds = load_iccv09(run.get("data"), mask=run.get("mask", "regions"))
    wanted = set(run["val_ids"])
    weight_sum, pixels = np.zeros(len(scales)), 0
    disagree, right, weight_there = 0, np.zeros(len(scales)), np.zeros(len(scales))
    merged_right = 0
    for image_id, path, label in zip(ds.ids, ds.image_paths, ds.labels):
        if image_id not in wanted:
            continue
        from kseg.inference import read_image

        image = read_image(path)
        h, w = image.shape[:2]
        x = tf.image.resize(tf.cast(image[None], tf.float32), predictor.base_size(h, w))
        weights = tf.image.resize(net(x), (h, w)).numpy()[0]
        preds = np.stack([a(image).argmax(-1) for a in alone], -1)
        merged = predictor(image).argmax(-1)
        known = label >= 0
        weight_sum += weights[known].sum(0)
        pixels += int(known.sum())
        split = known & (preds.min(-1) != preds.max(-1))
        disagree += int(split.sum())
        right += (preds[split] == label[split][:, None]).sum(0)
        weight_there += weights[split].sum(0)
        merged_right += int((merged[split] == label[split]).sum())
    print(json.dumps({"model": str(model_path), "photos": len(wanted), "scales": list(scales),
                      "mean_weight": [round(v, 3) for v in weight_sum / pixels],
                      "pixels_where_scales_disagree": round(disagree / pixels, 4),
                      "there_each_scale_right": [round(v, 3) for v in right / max(disagree, 1)],
                      "there_mean_weight": [round(v, 3) for v in weight_there / max(disagree, 1)],
                      "there_merged_right": round(merged_right / max(disagree, 1), 3)}, indent=1))


def _class_names(model_path, count: int) -> list[str]:
    """The run's class names (run.json beside the model), else numbers."""
    from kseg.runinfo import read_run_info

    names = (read_run_info(model_path) or {}).get("class_names") or []
    return list(names) if len(names) == count else [str(k) for k in range(count)]


if __name__ == "__main__":
    main()
