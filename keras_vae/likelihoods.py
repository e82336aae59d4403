"""Location-scale likelihoods for real-valued tables: p(x|z) with a per-example, per-feature
scale from the decoder (heteroscedastic), Gaussian or heavy-tailed.

A decoder for these likelihoods returns, for every feature, two numbers stacked on a new last
axis: params (..., *event, 2) = [location, log-scale]. The log-densities are written with
`keras.ops` (every backend), summed over the event axes, in nats:

- "gaussian_hetero": ln N(x | m, s^2) = -1/2 ln(2 pi) - ln s - 1/2 ((x - m) / s)^2
- "student_t": ln t_nu(x | m, s) = ln G((nu + 1) / 2) - ln G(nu / 2) - 1/2 ln(nu pi) - ln s
  - (nu + 1) / 2 ln(1 + ((x - m) / s)^2 / nu), with nu = `STUDENT_T_DF` degrees of freedom
- "laplace": ln Laplace(x | m, s) = -ln(2 s) - |x - m| / s

(s is the scale, not the standard deviation, for Student-t and Laplace.) The heavy tails let a
few extreme training rows (the anomalies of an unsupervised fit) cost the fit little, while
they still get high scores.
"""

import math

from keras import ops

#: The likelihoods whose decoder returns [location, log-scale] per feature.
TWO_PARAMETER = ("gaussian_hetero", "student_t", "laplace")
#: Degrees of freedom of the "student_t" likelihood (fixed; 1 is Cauchy, infinity Gaussian).
STUDENT_T_DF = 4.0

_LOG_2PI = math.log(2.0 * math.pi)
_T_CONST = (math.lgamma((STUDENT_T_DF + 1.0) / 2.0) - math.lgamma(STUDENT_T_DF / 2.0)
            - 0.5 * math.log(STUDENT_T_DF * math.pi))


def _sum_event(values, event_ndim):
    if event_ndim == 0:
        return values
    return ops.sum(values, axis=tuple(range(-event_ndim, 0)))


def location_scale_log_likelihood(kind, x, params, event_ndim=1):
    """ln p(x|z) summed over the event axes, for `kind` in `TWO_PARAMETER`.

    Args:
        kind: "gaussian_hetero", "student_t" or "laplace".
        x: (..., *event) data.
        params: (..., *event, 2): location and natural log of the scale, per feature.
        event_ndim: how many trailing axes of x form one example.

    Returns:
        (...,) log-likelihood in nats.
    """
    params = ops.convert_to_tensor(params)
    x = ops.cast(x, params.dtype)
    loc, log_scale = params[..., 0], params[..., 1]
    u = (x - loc) * ops.exp(-log_scale)
    if kind == "gaussian_hetero":
        values = -0.5 * _LOG_2PI - log_scale - 0.5 * ops.square(u)
    elif kind == "student_t":
        values = (_T_CONST - log_scale
                  - 0.5 * (STUDENT_T_DF + 1.0) * ops.log1p(ops.square(u) / STUDENT_T_DF))
    elif kind == "laplace":
        values = -math.log(2.0) - log_scale - ops.abs(u)
    else:
        raise ValueError(f"Unknown location-scale likelihood {kind!r}: expected one of "
                         f"{TWO_PARAMETER}.")
    return _sum_event(values, event_ndim)
