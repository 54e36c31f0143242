"""Train a classifier with cross_entropy_loss, then distil it into a smaller student.

Plain JAX + optax on synthetic data (a Gaussian mixture, one cluster per class):

    python docs/examples/distill.py            # full size, about a minute on a laptop CPU
    python docs/examples/distill.py --steps 50 # quicker

The teacher is a two-layer MLP trained on hard labels (with label smoothing);
the student, with a hidden layer eight times narrower, is trained with
``distillation_loss``: temperature-softened KL to the teacher plus the hard
cross-entropy. Both losses are printed as they fall.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import optax

import jaxkl


@functools.partial(jax.jit, static_argnames=("examples", "features", "classes"))
def make_data(key, *, examples, features, classes):
    """Points around one random centre per class, and their labels."""
    k_centres, k_labels, k_noise = jax.random.split(key, 3)
    centres = 2.0 * jax.random.normal(k_centres, (classes, features))
    labels = jax.random.randint(k_labels, (examples,), 0, classes)
    x = centres[labels] + 1.5 * jax.random.normal(k_noise, (examples, features))
    return x, labels


@functools.partial(jax.jit, static_argnums=1)
def init_mlp(key, sizes):
    """Weights and biases of an MLP with the given layer sizes (He initialisation)."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), jnp.zeros(n))
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]


@jax.jit
def mlp(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return x @ w + b


def fit(params, loss_fn, *, steps, batch, examples, key, learning_rate=3e-3, log_every=0, name=""):
    """Adam on minibatches; returns the trained parameters and the loss at every step."""
    optimizer = optax.adam(learning_rate)

    @jax.jit
    def step(params, opt_state, idx):
        loss, grads = jax.value_and_grad(loss_fn)(params, idx)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    batches = jax.random.randint(key, (steps, batch), 0, examples)  # one draw for all steps
    losses = []
    for i, idx in enumerate(batches):
        params, opt_state, loss = step(params, opt_state, idx)
        losses.append(float(loss))
        if log_every and (i % log_every == 0 or i == steps - 1):
            print(f"{name} step {i:4d}  loss {losses[-1]:.4f}")
    return params, losses


def main(*, steps=300, examples=4096, features=32, classes=10, hidden=128, batch=256,
         temperature=4.0, alpha=0.9, seed=0, log_every=50):
    """Run both phases; returns (teacher_losses, student_losses, student_accuracy)."""
    k_data, k_teacher, k_student, k_fit1, k_fit2 = jax.random.split(jax.random.key(seed), 5)
    x, y = make_data(k_data, examples=examples, features=features, classes=classes)

    def teacher_loss(params, idx):
        return jaxkl.cross_entropy_loss(mlp(params, x[idx]), y[idx], label_smoothing=0.1)

    teacher = init_mlp(k_teacher, (features, hidden, classes))
    teacher, teacher_losses = fit(teacher, teacher_loss, steps=steps, batch=batch,
                                  examples=examples, key=k_fit1, log_every=log_every, name="teacher")
    teacher_logits = mlp(teacher, x)  # fixed targets; distillation_loss also stops their gradient

    def student_loss(params, idx):
        return jaxkl.distillation_loss(mlp(params, x[idx]), teacher_logits[idx],
                                       temperature=temperature, labels=y[idx], alpha=alpha)

    student = init_mlp(k_student, (features, max(hidden // 8, 2), classes))
    student, student_losses = fit(student, student_loss, steps=steps, batch=batch,
                                  examples=examples, key=k_fit2, log_every=log_every, name="student")
    accuracy = float(jax.jit(lambda p: jnp.mean(jnp.argmax(mlp(p, x), -1) == y))(student))
    if log_every:
        print(f"student accuracy on the training set: {accuracy:.3f}")
    return teacher_losses, student_losses, accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=4.0)
    args = parser.parse_args()
    main(steps=args.steps, temperature=args.temperature)
