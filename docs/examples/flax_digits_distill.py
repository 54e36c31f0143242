"""Flax NNX on scikit-learn's handwritten digits: a teacher, then a small student three ways.

Every model sees the same few labelled digits and the same unlabelled ones:

    python docs/examples/flax_digits_distill.py --figure digits.png   # 5 min on 2 busy cores
    python docs/examples/flax_digits_distill.py --steps 100           # quicker

* the teacher, a wide two-layer MLP, learns from the labels with
  ``cross_entropy_loss(label_smoothing=0.1)``;
* student "labels only": the same loss on the labels;
* student "distilled": ``distillation_loss`` from the teacher at temperature T, with the
  labels where there are labels and the teacher's softened predictions on the unlabelled digits;
* student "UDA": the labels plus ``consistency_loss`` between its prediction on an unlabelled
  digit and on a shifted, noisy copy of it (Xie et al., 2020).

Test accuracy is averaged over a few seeds (each seed draws its own split and initialisation);
the last line printed holds the final accuracies. The digits (1797 8x8 images) ship with
scikit-learn: nothing is downloaded.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

import jaxkl

STUDENTS = ("labels only", "distilled", "UDA")


class MLP(nnx.Module):
    def __init__(self, sizes, *, rngs):
        self.layers = nnx.List([nnx.Linear(m, n, rngs=rngs) for m, n in zip(sizes[:-1], sizes[1:])])

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


def split_digits(seed, *, labelled, test_fraction=1 / 3):
    """Pixels in [0, 1] and labels: a labelled, an unlabelled and a test split."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    lab, unlab = train[:labelled], train[labelled:]
    return {"x_lab": x[lab], "y_lab": y[lab], "x_unlab": x[unlab], "x_test": x[test], "y_test": y[test]}


def augment(key, x, *, noise=0.1):
    """Shift each 8x8 digit by up to one pixel each way (zeros come in), add a little noise."""
    k_shift, k_noise = jax.random.split(key)
    shifts = jax.random.randint(k_shift, (x.shape[0], 2), 0, 3)  # offsets into the padded image
    padded = jnp.pad(x.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)))
    shifted = jax.vmap(lambda im, s: jax.lax.dynamic_slice(im, (s[0], s[1]), (8, 8)))(padded, shifts)
    return shifted.reshape(x.shape) + noise * jax.random.normal(k_noise, x.shape)


TEMPERATURE = 4.0  # distillation: teacher and student softened alike, loss scaled by T^2
ALPHA = 0.5  # distillation: weight of the soft part where there are labels
UDA_WEIGHT = 1.0


# Each loss takes the model, a batch and a key (nnx.value_and_grad differentiates the model).
def labels_loss(model, batch, key):
    return jaxkl.cross_entropy_loss(model(batch["x_lab"]), batch["y_lab"], label_smoothing=0.1)


def distilled_loss(model, batch, key):
    labelled = jaxkl.distillation_loss(model(batch["x_lab"]), batch["teacher_lab"],
                                       temperature=TEMPERATURE, labels=batch["y_lab"], alpha=ALPHA)
    unlabelled = jaxkl.distillation_loss(model(batch["x_unlab"]), batch["teacher_unlab"],
                                         temperature=TEMPERATURE)
    return labelled + unlabelled


def uda_loss(model, batch, key):
    x = batch["x_unlab"]
    # consistency_loss stops the gradient of the clean prediction itself.
    consistency = jaxkl.consistency_loss(model(augment(key, x)), model(x),
                                         temperature=0.4, confidence_threshold=0.8)
    return labels_loss(model, batch, key) + UDA_WEIGHT * consistency


LOSSES = {"labels only": labels_loss, "distilled": distilled_loss, "UDA": uda_loss}


# Built inside one compiled program: run eagerly, each initialiser would be compiled alone.
new_mlp = nnx.jit(lambda sizes, rngs: MLP(sizes, rngs=rngs), static_argnums=0)


@nnx.jit(static_argnames="loss_fn")
def train_step(model, optimizer, data, idx, key, *, loss_fn):
    """One Adam step on the whole labelled split and the unlabelled digits `idx`."""
    batch = {"x_lab": data["x_lab"], "y_lab": data["y_lab"], "x_unlab": data["x_unlab"][idx]}
    if "teacher_unlab" in data:
        batch |= {"teacher_lab": data["teacher_lab"], "teacher_unlab": data["teacher_unlab"][idx]}
    loss, grads = nnx.value_and_grad(loss_fn)(model, batch, key)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x)


@nnx.jit
def accuracy(model, x, y):
    return jnp.mean(jnp.argmax(model(x), axis=-1) == y)


def train(model, loss_fn, data, *, steps, batch_size, key, eval_every, learning_rate=3e-3):
    """Adam for `steps` steps; returns the test accuracy every `eval_every` steps (and at the end)."""
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
    k_batches, k_steps = jax.random.split(key)
    # Every step's minibatch and key drawn at once: no small dispatches inside the loop.
    batches = np.asarray(jax.random.randint(k_batches, (steps, batch_size), 0, data["x_unlab"].shape[0]))
    keys = jax.random.split(k_steps, steps)
    curve = []
    for i in range(steps):
        train_step(model, optimizer, data, batches[i], keys[i], loss_fn=loss_fn)
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            curve.append((i + 1, float(accuracy(model, data["x_test"], data["y_test"]))))
    return curve


def run_seed(seed, *, steps, labelled, teacher_hidden, student_hidden, batch_size, eval_every):
    """Teacher and the three students on one split; returns {name: [(step, test accuracy)]}."""
    data = {k: jnp.asarray(v) for k, v in split_digits(seed, labelled=labelled).items()}
    key = jax.random.key(seed)
    teacher = new_mlp((64, *teacher_hidden, 10), nnx.Rngs(seed))
    k_teacher, key = jax.random.split(key)
    curves = {"teacher": train(teacher, labels_loss, data, steps=steps, batch_size=batch_size,
                               key=k_teacher, eval_every=eval_every)}
    data |= {"teacher_lab": predict(teacher, data["x_lab"]), "teacher_unlab": predict(teacher, data["x_unlab"])}
    for name in STUDENTS:
        student = new_mlp((64, student_hidden, 10), nnx.Rngs(seed + 1))  # same start for all three
        curves[name] = train(student, LOSSES[name], data, steps=steps, batch_size=batch_size,
                             key=key, eval_every=eval_every)
    return curves


def plot(curves_per_seed, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in ("teacher", *STUDENTS):
        steps = [s for s, _ in curves_per_seed[0][name]]
        acc = np.array([[a for _, a in c[name]] for c in curves_per_seed])
        mean, std = acc.mean(0), acc.std(0)
        style = {"color": "k", "linestyle": "--"} if name == "teacher" else {}
        (line,) = ax.plot(steps, mean, label=name, **style)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2, color=line.get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.5, 1.0)
    ax.set_title(f"Flax NNX on digits: mean ± std over {len(curves_per_seed)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(*, steps=500, seeds=5, labelled=150, teacher_hidden=(256, 256), student_hidden=32,
         batch_size=256, eval_every=25, figure=None, verbose=True):
    """Runs every seed; returns {name: (mean, std)} of the final test accuracy."""
    curves_per_seed = [
        run_seed(seed, steps=steps, labelled=labelled, teacher_hidden=teacher_hidden,
                 student_hidden=student_hidden, batch_size=batch_size, eval_every=eval_every)
        for seed in range(seeds)
    ]
    final = {}
    for name in ("teacher", *STUDENTS):
        acc = np.array([c[name][-1][1] for c in curves_per_seed])
        final[name] = (float(acc.mean()), float(acc.std()))
        if verbose:
            print(f"{name:12s} test accuracy {acc.mean():.3f} ± {acc.std():.3f}  (per seed {np.round(acc, 3)})")
    if verbose:  # same split and start for the three students: the paired gain is less noisy
        base = np.array([c["labels only"][-1][1] for c in curves_per_seed])
        for name in STUDENTS[1:]:
            gain = np.array([c[name][-1][1] for c in curves_per_seed]) - base
            print(f"{name:12s} minus labels only: {gain.mean():+.3f} ± {gain.std():.3f}")
    if figure:
        plot(curves_per_seed, figure)
    if verbose:
        print("final test accuracy: " + ", ".join(f"{n} {m:.3f}±{s:.3f}" for n, (m, s) in final.items()))
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps per model")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--labelled", type=int, default=150, help="labelled training digits")
    parser.add_argument("--figure", help="save the accuracy curves to this PNG")
    args = parser.parse_args()
    main(steps=args.steps, seeds=args.seeds, labelled=args.labelled, figure=args.figure)
