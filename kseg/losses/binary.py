"""The binary (1-channel) terms: targets in [0, 1] (others ignored), cross-entropy, focal, Lovasz hinge."""

from __future__ import annotations

from keras import ops

from kseg.errors import KsegError
from kseg.labels import binary_valid
from kseg.losses.base import EPSILON


def _prepare_binary(y_true, y_pred, from_logits):
    """(targets, foreground probabilities, valid mask, log p, log (1 - p)), all (N, H, W, 1) float32.

    Targets outside [0, 1] are ignored (set to 0, valid 0). The logs come from a
    log-sigmoid of the logits, or from probabilities clipped at ``EPSILON``.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    if len(y_true.shape) == len(y_pred.shape) - 1:
        y_true = ops.expand_dims(y_true, -1)
    ok = binary_valid(y_true)
    y_true = ops.where(ok, y_true, 0.0)
    valid = ops.cast(ok, "float32")
    if from_logits:
        probs = ops.sigmoid(y_pred)
        log_p, log_q = ops.log_sigmoid(y_pred), ops.log_sigmoid(-y_pred)
    else:
        probs = y_pred
        log_p = ops.log(ops.clip(y_pred, EPSILON, 1.0))
        log_q = ops.log(ops.clip(1.0 - y_pred, EPSILON, 1.0))
    return y_true, probs, valid, log_p, log_q


def _binary_pixel_weights(loss, y_true):
    """Per-pixel weight from two class weights (background, foreground), or None."""
    w = loss._weights(2)
    if w is None:
        return None
    return w[0] * (1.0 - y_true) + w[1] * y_true


def _valid_mean(per_pixel, valid):
    return ops.sum(ops.where(valid > 0, per_pixel, 0.0)) / ops.maximum(ops.sum(valid), 1.0)


def _binary_crossentropy(loss, y_true, y_pred):
    t, _, valid, log_p, log_q = _prepare_binary(y_true, y_pred, loss.from_logits)
    ce = -(t * log_p + (1.0 - t) * log_q)
    w = _binary_pixel_weights(loss, t)
    return _valid_mean(ce if w is None else ce * w, valid)


def _binary_focal(loss, y_true, y_pred):
    t, _, valid, log_p, log_q = _prepare_binary(y_true, y_pred, loss.from_logits)
    if isinstance(loss.alpha, (int, float)):
        alpha_bg, alpha_fg = 1.0 - loss.alpha, float(loss.alpha)
    elif len(loss.alpha) == 2:
        alpha_bg, alpha_fg = loss.alpha
    else:
        raise KsegError(f"loss {loss.name}: {len(loss.alpha)} alpha values for a binary model: give one number "
                        "(the foreground's; the background gets 1 - alpha) or two (background, foreground)")
    # (1 - p)^gamma and p^gamma kept away from 0^gamma, whose gradient is infinite for gamma < 1
    mod_fg = ops.power(ops.maximum(ops.exp(log_q), EPSILON), loss.gamma)
    mod_bg = ops.power(ops.maximum(ops.exp(log_p), EPSILON), loss.gamma)
    focal = -(alpha_fg * t * mod_fg * log_p + alpha_bg * (1.0 - t) * mod_bg * log_q)
    w = _binary_pixel_weights(loss, t)
    return _valid_mean(focal if w is None else focal * w, valid)


def _lovasz_hinge(loss, y_true, y_pred):
    """Lovasz hinge (Berman et al. 2018) over every valid pixel of the batch."""
    loss._weights(2)  # checks the count; the hinge measures the foreground alone
    t, _, valid, log_p, log_q = _prepare_binary(y_true, y_pred, loss.from_logits)
    # the score: the logits, or log p - log (1 - p) of the clipped probability
    logits = ops.cast(y_pred, "float32") if loss.from_logits else log_p - log_q
    signs = 2.0 * t - 1.0
    # ignored pixels get error 0: sorted after every positive error, they change no term of the sum
    errors = ops.reshape(ops.where(valid > 0, ops.relu(1.0 - logits * signs), 0.0), (-1,))
    t = ops.reshape(t, (-1,))
    order = ops.argsort(-errors)
    e_sorted = ops.take(errors, order)
    t_sorted = ops.stop_gradient(ops.take(t, order))
    support = ops.sum(t)
    inter = support - ops.cumsum(t_sorted)
    union = support + ops.cumsum(1.0 - t_sorted)
    jac = 1.0 - inter / ops.maximum(union, EPSILON)
    grad = ops.concatenate([jac[:1], jac[1:] - jac[:-1]], axis=0)
    return ops.sum(e_sorted * grad)
