"""ln Gamma and polygamma against scipy, and their derivatives."""

import jax
import numpy as np
import numpyro
import scipy.special

from rational_icl.fits.special import log_gamma, polygamma

numpyro.enable_x64()


def test_log_gamma_and_polygamma_match_scipy():
    x = np.geomspace(1e-5, 1e6, 500)
    np.testing.assert_allclose(log_gamma(x), scipy.special.gammaln(x), rtol=1e-10, atol=1e-10)
    for order in (1, 2, 3, 4):
        want = scipy.special.polygamma(order, x)
        np.testing.assert_allclose(polygamma(order, x), want, rtol=1e-9)
    digamma = jax.vmap(jax.grad(log_gamma))(x)
    np.testing.assert_allclose(digamma, scipy.special.digamma(x), rtol=1e-9, atol=1e-9)
