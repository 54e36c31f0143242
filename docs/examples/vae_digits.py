"""Equinox: a variational autoencoder on scikit-learn's handwritten digits.

    python docs/examples/vae_digits.py --figure vae.png   # 2-3 min on 2 busy cores
    python docs/examples/vae_digits.py --steps 500        # quicker

Each of the 64 pixels of a digit is an integer from 0 to 16, so the decoder gives every pixel a
categorical distribution over those 17 values and the likelihood is exact (no Gaussian or
Bernoulli stand-in). With q(z | x) = Normal(mu(x), sigma(x)) and the prior Normal(0, 1), the
evidence lower bound of one digit is

    ELBO = -reconstruction - KL,
    reconstruction = sum over pixels of cross_entropy_loss(decoder logits, pixel values),
    KL = sum over latent dimensions of KL(Normal(mu, sigma) || Normal(0, 1)),

the KL in closed form from ``jaxkl.distributions``, the reconstruction from jaxkl's
cross-entropy kernel, the expectation over q estimated with one reparameterised draw while
training. The last line printed holds the test ELBO and its split, in nats per digit.
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxkl
from jaxkl.distributions import Normal, kl_divergence

LEVELS = 17  # pixel values 0..16


class VAE(eqx.Module):
    encoder: eqx.nn.MLP
    decoder: eqx.nn.MLP

    def __init__(self, *, latent, hidden, key):
        k_enc, k_dec = jax.random.split(key)
        self.encoder = eqx.nn.MLP(64, 2 * latent, hidden, depth=2, activation=jax.nn.gelu, key=k_enc)
        self.decoder = eqx.nn.MLP(latent, 64 * LEVELS, hidden, depth=2, activation=jax.nn.gelu, key=k_dec)

    def posterior(self, pixels):
        """q(z | x) for a batch `[B, 64]` of integer pixels."""
        loc, raw_scale = jnp.split(jax.vmap(self.encoder)(pixels / 16.0), 2, axis=-1)
        return Normal(loc, jax.nn.softplus(raw_scale) + 1e-4)

    def logits(self, z):
        """p(x | z): logits `[B, 64, 17]` over each pixel's value."""
        return jax.vmap(self.decoder)(z).reshape(z.shape[0], 64, LEVELS)


def elbo_terms(model, pixels, key):
    """Per-digit reconstruction and KL in nats, with one reparameterised draw z ~ q(z | x)."""
    q = model.posterior(pixels)
    z = q.sample(key)
    reconstruction = jaxkl.cross_entropy_loss(model.logits(z), pixels, reduction="none").sum(-1)
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    return reconstruction, kl


@eqx.filter_jit
def evaluate(model, pixels, key):
    """Mean reconstruction, KL and ELBO over `pixels`, with one draw of z per digit."""
    reconstruction, kl = elbo_terms(model, pixels, key)
    return {"elbo": -jnp.mean(reconstruction + kl), "reconstruction": jnp.mean(reconstruction),
            "kl": jnp.mean(kl)}


def mean_image(logits):
    """The expected pixel value under p(x | z), in [0, 1], as `[B, 8, 8]`."""
    return (jaxkl.softmax(logits) @ jnp.arange(LEVELS, dtype=logits.dtype)).reshape(-1, 8, 8) / 16.0


# Compiled whole: run eagerly, every operation of the MLPs would be compiled on its own.
new_vae = eqx.filter_jit(lambda latent, hidden, key: VAE(latent=latent, hidden=hidden, key=key))


@eqx.filter_jit
def figure_images(model, digits, key):
    """Reconstructions of `digits` from the mean z, and 16 samples from the prior (expected pixels)."""
    recon = mean_image(model.logits(model.posterior(digits).loc))
    samples = mean_image(model.logits(jax.random.normal(key, (16, model.decoder.in_size))))
    return recon, samples


def main(*, steps=1500, latent=8, hidden=128, batch=128, learning_rate=1e-3, eval_every=100,
         seed=0, figure=None, verbose=True):
    """Trains the VAE; returns the final test metrics, the curves, the model and the test pixels."""
    digits = load_digits()
    pixels = digits.data.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(pixels))
    n_test = len(pixels) // 3
    test, train = jnp.asarray(pixels[order[:n_test]]), jnp.asarray(pixels[order[n_test:]])

    key, k_model = jax.random.split(jax.random.key(seed))
    model = new_vae(latent, hidden, k_model)
    optimizer = optax.adam(learning_rate)
    opt_state = jax.jit(optimizer.init)(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, key):
        # The minibatch is drawn inside the step: one compiled program per step, no small dispatches.
        key, k_batch, k_step, k_eval = jax.random.split(key, 4)
        pixels = train[jax.random.randint(k_batch, (batch,), 0, train.shape[0])]

        def loss(model):  # the negative ELBO, averaged over the batch
            reconstruction, kl = elbo_terms(model, pixels, k_step)
            return jnp.mean(reconstruction + kl)

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, key, k_eval

    curves = {"step": [], "train": [], "test": []}
    for i in range(steps):
        model, opt_state, key, k_eval = step(model, opt_state, key)
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            curves["step"].append(i + 1)
            curves["train"].append({k: float(v) for k, v in evaluate(model, train, k_eval).items()})
            curves["test"].append({k: float(v) for k, v in evaluate(model, test, k_eval).items()})
            if verbose:
                t = curves["test"][-1]
                print(f"step {i + 1:5d}  test ELBO {t['elbo']:8.2f}  (reconstruction {t['reconstruction']:.2f},"
                      f" KL {t['kl']:.2f})")
    final = curves["test"][-1]
    if figure:
        plot(model, test, curves, jax.random.key(seed + 1), figure)
    if verbose:
        print(f"test ELBO {final['elbo']:.2f} nats per digit = -(reconstruction {final['reconstruction']:.2f}"
              f" + KL {final['kl']:.2f}); {-final['elbo'] / 64 / np.log(2):.3f} bits per pixel")
    return {"final": final, "curves": curves, "model": model, "test": test}


def plot(model, test, curves, key, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(11, 4.2))
    grid = fig.add_gridspec(1, 3, width_ratios=[1.6, 1, 1])
    ax = fig.add_subplot(grid[0, 0])
    for split, style in (("train", "--"), ("test", "-")):
        for term, color in (("elbo", "C0"), ("reconstruction", "C1"), ("kl", "C2")):
            sign = 1 if term == "elbo" else -1  # plot -reconstruction and -KL, the ELBO's two parts
            values = [sign * c[term] for c in curves[split]]
            label = f"{split} " + {"elbo": "ELBO", "reconstruction": "-reconstruction", "kl": "-KL"}[term]
            ax.plot(curves["step"], values, style, color=color, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("nats per digit")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)

    def tile(images):  # 8 images as 2 rows of 4, a blank pixel around each
        images = np.pad(np.asarray(images), ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
        return np.vstack([np.hstack(images[:4]), np.hstack(images[4:8])])

    digits = test[:8]
    recon, samples = (np.asarray(x) for x in figure_images(model, digits, key))
    gap = np.full((2, 40), np.nan)  # blank lines between the two blocks
    tiles = {"test digits (top),\nreconstructions from the mean z": np.vstack(
                [tile(digits.reshape(-1, 8, 8) / 16.0), gap, tile(recon)]),
             "samples from the prior\n(expected pixel values)": np.vstack([tile(samples[:8]), gap, tile(samples[8:])])}
    for k, (title, image) in enumerate(tiles.items()):
        ax = fig.add_subplot(grid[0, k + 1])
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--latent", type=int, default=8, help="latent dimensions")
    parser.add_argument("--figure", help="save the ELBO curves, reconstructions and samples to this PNG")
    args = parser.parse_args()
    main(steps=args.steps, latent=args.latent, figure=args.figure)
