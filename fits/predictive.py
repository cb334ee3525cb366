"""Per-draw values of the model's own sites: its deterministic sites (``weight_memorizing``,
``log_posterior_odds``...), posterior predictive draws of its observation, and the pointwise
log likelihood of the observation (for PSIS-LOO).

Each substitutes posterior draws into the model (NumPyro's ``Predictive`` and
``log_likelihood``), so a change to the model shows here without a second copy. The
draws go through in chunks, each one compiled call over ``CHUNK_ELEMENTS`` per-cell values;
each chunk's result is stored at once in the caller's dtype (float32 for per-cell draws),
so a fit never holds every draw's per-cell values in float64. Every temporary of the
model is O(cells) per draw (the drift's two Kalman filters keep a few values per cell, no
checkpoint x checkpoint matrix), so a chunk's memory is a small multiple of 8 MB
whatever the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import numpy as np
from numpyro.infer import Predictive
from numpyro.infer.util import log_likelihood

from rational_icl.fits.engines import Target

CHUNK_ELEMENTS = 2**20  # per-cell values per compiled call (8 MB per float64 temporary)


def site_draws(
    target: Target,
    latent: dict,
    names: list[str],
    *,
    cells: int,
    one_at_a_time: bool = False,
    dtypes: dict | None = None,
) -> dict[str, np.ndarray]:
    """Values of the sites ``names`` for every draw of ``latent`` (draws, ...).

    Parameters
    ----------
    target : Target
    latent : dict
        Constrained draws of the latent sites, (draws, ...) arrays.
    names : list of str
        Sites to return: deterministic sites, or latent sites as substituted.
    cells : int
        Values per draw of the largest site (sizes the chunks).
    one_at_a_time : bool
        Evaluate the model one draw at a time within a chunk (its per-draw temporaries are
        large: context-dependent weights, the outputs likelihood) instead of vectorised.
    dtypes : dict, optional
        Site name -> numpy dtype of the result (default float64).
    """

    def compute(samples, _key, data):
        predict = Predictive(
            target.model,
            posterior_samples=samples,
            return_sites=names,
            parallel=not one_at_a_time,
        )
        # every sample site is substituted and the observation observed: nothing is drawn
        return predict(jax.random.PRNGKey(0), **data)

    return _in_chunks(jax.jit(compute), latent, target.data, _chunk(cells), None, dtypes)


def predictive_draws(
    target: Target, latent: dict, key, *, cells: int, dtype=np.float32
) -> np.ndarray:
    """Draws of the observed site from the model with ``latent`` substituted: the posterior
    predictive (draws, ...) of every cell, fitted or held out."""
    name = target.observed
    data = {k: v for k, v in target.data.items() if k != name}  # unobserved: simulated

    def compute(samples, chunk_key, data):
        predict = Predictive(
            target.model, posterior_samples=samples, return_sites=[name], parallel=True
        )
        return predict(chunk_key, **data)

    result = _in_chunks(jax.jit(compute), latent, data, _chunk(cells), key, {name: dtype})
    return result[name]


def pointwise_log_likelihood(target: Target, latent: dict, *, cells: int, fitted) -> np.ndarray:
    """Log likelihood of the observed site for every draw, from the model's own observation
    distribution: (draws, cells) in float64, the cells being the flat indices ``fitted`` of
    the site. Not float32: PSIS smooths the largest importance ratios of each cell, and
    float32 makes ties of them (arviz-stats then refuses the cell).

    One draw at a time: a draw's values then do not depend on the draws beside it (a
    thinned fit keeps them bit for bit), and the outputs model's per-draw quadrature terms
    (C, D, N, S, K) are large already.
    """
    name = target.observed

    def compute(samples, _key, data):
        values = log_likelihood(target.model, samples, parallel=False, **data)
        return {name: values[name].reshape(len(values[name]), -1)[:, fitted]}

    return _in_chunks(jax.jit(compute), latent, target.data, _chunk(cells), None, None)[name]


def _chunk(cells: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(cells, 1))


def _in_chunks(
    compute: Callable, samples: dict, data: dict, size: int, key, dtypes: dict | None
) -> dict[str, np.ndarray]:
    """``compute(chunk, chunk_key, data)`` over consecutive chunks of ``size`` draws, the
    last one padded (one compiled shape); results written into arrays of ``dtypes``.

    Each chunk's key is ``key`` folded with the chunk's index (None: no key).
    """
    total = len(next(iter(samples.values())))
    size = min(size, total)
    out = {}
    for index in range(math.ceil(total / size)):
        begin = index * size
        end = min(begin + size, total)
        chunk = {k: _padded(np.asarray(v[begin:end]), size) for k, v in samples.items()}
        chunk_key = None if key is None else jax.random.fold_in(key, index)
        for name, value in compute(chunk, chunk_key, data).items():
            value = np.asarray(value)[: end - begin]
            if name not in out:
                dtype = (dtypes or {}).get(name, np.float64)
                out[name] = np.empty((total, *value.shape[1:]), dtype=dtype)
            out[name][begin:end] = value
    return out


def _padded(values: np.ndarray, size: int) -> np.ndarray:
    """``values`` (n, ...) padded to (size, ...) by repeating its last draw."""
    missing = size - len(values)
    if not missing:
        return values
    return np.concatenate([values, np.repeat(values[-1:], missing, axis=0)])
