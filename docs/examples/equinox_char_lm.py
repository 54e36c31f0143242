"""Equinox: a character-level transformer trained on the Python standard library's docstrings.

The output head goes through ``jaxkl.fused_linear_cross_entropy`` (with z-loss), which never
forms the tokens x vocabulary logits. The same model, from the same initialisation and on the
same batches, is trained alongside with optax's cross-entropy on materialised logits, so that
both step times are measured on the same machine at the same moment:

    python docs/examples/equinox_char_lm.py --figure char-lm.png   # 4 min on 2 busy cores
    python docs/examples/equinox_char_lm.py --steps 50             # quicker

The corpus is collected at run time from the docstrings of a fixed list of standard-library
modules (nothing is downloaded; its exact size depends on the Python version). The last line
printed holds the validation perplexity of both models, the step-time ratio and the ratio of
compiled temporary memory (XLA's ``memory_analysis`` of the whole training step).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxkl

MODULES = (
    "argparse", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
    "difflib", "fractions", "functools", "heapq", "inspect", "itertools", "json", "logging",
    "os", "pathlib", "pickle", "random", "re", "shutil", "statistics", "string", "subprocess",
    "textwrap", "threading", "typing", "unittest", "zipfile",
)
Z_LOSS = 1e-4  # weight of log-sum-exp^2 (PaLM's z-loss): keeps the head's logits from drifting


def stdlib_docstrings(modules=MODULES):
    """The docstrings of the modules and of the public names they define, as one string."""
    docs = []
    for name in modules:
        module = importlib.import_module(name)
        docs.append(inspect.getdoc(module) or "")
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            docs.append(inspect.getdoc(obj) or "")
            if inspect.isclass(obj):
                docs += [inspect.getdoc(m) or "" for k, m in sorted(vars(obj).items())
                         if not k.startswith("_") and callable(m)]
    text = "\n\n".join(d for d in docs if d)
    return "".join(c if c.isascii() and (c.isprintable() or c == "\n") else "?" for c in text)


class Block(eqx.Module):
    norm1: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    norm2: eqx.nn.LayerNorm
    mlp_in: eqx.nn.Linear
    mlp_out: eqx.nn.Linear

    def __init__(self, width, heads, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm1 = eqx.nn.LayerNorm(width)
        self.attention = eqx.nn.MultiheadAttention(heads, width, key=k1)
        self.norm2 = eqx.nn.LayerNorm(width)
        self.mlp_in = eqx.nn.Linear(width, 4 * width, key=k2)
        self.mlp_out = eqx.nn.Linear(4 * width, width, key=k3)

    def __call__(self, x, mask):  # x: [T, D], one sequence
        h = jax.vmap(self.norm1)(x)
        x = x + self.attention(h, h, h, mask=mask)
        h = jax.vmap(self.norm2)(x)
        return x + jax.vmap(self.mlp_out)(jax.nn.gelu(jax.vmap(self.mlp_in)(h)))


class CharTransformer(eqx.Module):
    embedding: eqx.nn.Embedding
    positions: jax.Array
    blocks: list
    norm: eqx.nn.LayerNorm
    head: jax.Array  # [D, V]: the fused loss takes `hidden @ head`

    def __init__(self, vocab, *, width, heads, layers, context, key):
        keys = jax.random.split(key, layers + 3)
        self.embedding = eqx.nn.Embedding(vocab, width, key=keys[0])
        self.positions = 0.02 * jax.random.normal(keys[1], (context, width))
        self.blocks = [Block(width, heads, key=k) for k in keys[3:]]
        self.norm = eqx.nn.LayerNorm(width)
        self.head = jax.random.normal(keys[2], (width, vocab)) / jnp.sqrt(width)

    def hidden(self, tokens):
        """Final hidden states `[T, D]` of one sequence `[T]` (the logits are `hidden @ head`)."""
        x = jax.vmap(self.embedding)(tokens) + self.positions[: tokens.shape[0]]
        causal = jnp.tril(jnp.ones((tokens.shape[0], tokens.shape[0]), dtype=bool))
        for block in self.blocks:
            x = block(x, causal)
        return jax.vmap(self.norm)(x)


def flat_hidden(model, tokens):
    """Hidden states of a batch `[B, T]`, flattened to `[B*T, D]`."""
    hidden = jax.vmap(model.hidden)(tokens)
    return hidden.reshape(-1, hidden.shape[-1])


def fused_head_loss(hidden, head, targets):
    """Cross-entropy + z-loss of `hidden @ head`, fused: the `[N, V]` logits are never formed."""
    return jaxkl.fused_linear_cross_entropy(hidden, head, targets, z_loss=Z_LOSS)


def optax_head_loss(hidden, head, targets):
    """The same objective on materialised logits, as usually written."""
    logits = hidden @ head
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.mean(ce + Z_LOSS * jnp.square(jax.nn.logsumexp(logits, axis=-1)))


HEAD_LOSSES = {"jaxkl fused": fused_head_loss, "optax": optax_head_loss}


def model_loss(head_loss, model, tokens, targets):
    return head_loss(flat_hidden(model, tokens), model.head, targets.reshape(-1))


def compiled_with_temp(fn, *args):
    """`jit(fn)` compiled for these arguments' shapes, and its temporary memory in MiB (XLA's count)."""
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, compiled.memory_analysis().temp_size_in_bytes / 2**20


def make_step(head_loss, static, optimizer):
    """A jitted Adam step on the model's arrays (`static` holds the rest of the Equinox module)."""

    def step(params, opt_state, tokens, targets):
        loss, grads = jax.value_and_grad(
            lambda p: model_loss(head_loss, eqx.combine(p, static), tokens, targets))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def windows(data, starts, context):
    """Input windows `[B, T]` and the next character for each position."""
    idx = starts[:, None] + np.arange(context + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, 1:]


def main(*, steps=300, width=64, heads=4, layers=2, context=64, batch=32, learning_rate=3e-3,
         eval_every=50, eval_windows=64, modules=MODULES, seed=0, figure=None, verbose=True):
    """Trains both models in lockstep; returns a dict of the measurements."""
    text = stdlib_docstrings(modules)
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text], dtype=np.int32)
    cut = int(0.9 * len(data))
    train, val = data[:cut], data[cut:]
    rng = np.random.default_rng(seed)
    val_starts = np.linspace(0, len(val) - context - 1, eval_windows).astype(int)
    val_tokens, val_targets = windows(val, val_starts, context)
    if verbose:
        print(f"corpus: {len(text):,} characters from {len(modules)} modules, vocabulary {len(chars)}")

    # Built inside one compiled program: run eagerly, each initialiser would be compiled alone.
    model = eqx.filter_jit(lambda key: CharTransformer(len(chars), width=width, heads=heads, layers=layers,
                                                       context=context, key=key))(jax.random.key(seed))
    params, static = eqx.partition(model, eqx.is_array)
    optimizer = optax.adamw(learning_rate, weight_decay=0.01)
    opt_state = jax.jit(optimizer.init)(params)
    state = {name: (params, opt_state) for name in HEAD_LOSSES}  # the same start

    tokens, targets = windows(train, rng.integers(0, len(train) - context - 1, batch), context)
    # Each step is compiled once, ahead of time: the same executable is measured and then run.
    steps_fn, step_temp = {}, {}
    for name, loss in HEAD_LOSSES.items():
        steps_fn[name], step_temp[name] = compiled_with_temp(
            make_step(loss, static, optimizer), *state[name], tokens, targets)
    # The head's loss and gradient alone, at the same shapes: the part the fused kernel changes.
    head_args = eqx.filter_jit(flat_hidden)(model, tokens), model.head, targets.reshape(-1)
    head_temp = {name: compiled_with_temp(jax.grad(loss, argnums=(0, 1)), *head_args)[1]
                 for name, loss in HEAD_LOSSES.items()}

    @jax.jit
    def val_loss(params):  # plain cross-entropy (no z-loss), the same function for both models
        model = eqx.combine(params, static)
        return jaxkl.fused_linear_cross_entropy(flat_hidden(model, val_tokens), model.head,
                                                val_targets.reshape(-1))

    history = {name: {"train": [], "val": [], "seconds": []} for name in steps_fn}
    for i in range(steps):
        tokens, targets = windows(train, rng.integers(0, len(train) - context - 1, batch), context)
        for name, step in steps_fn.items():  # one after the other: both see the same load
            start = time.perf_counter()
            params, opt_state, loss = step(*state[name], tokens, targets)
            loss = float(loss)  # waits for the step
            history[name]["seconds"].append(time.perf_counter() - start)
            history[name]["train"].append(loss)
            state[name] = params, opt_state
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            for name in steps_fn:
                history[name]["val"].append((i + 1, float(jnp.exp(val_loss(state[name][0])))))
            if verbose:
                print(f"step {i + 1:4d}  " + "  ".join(
                    f"{n}: loss {h['train'][-1]:.3f} val ppl {h['val'][-1][1]:.2f}" for n, h in history.items()))

    # The steps are compiled already; the median after the first two (warm-up) is the step time.
    step_ms = {n: 1e3 * float(np.median(h["seconds"][min(2, steps - 1):])) for n, h in history.items()}
    result = {
        "val_ppl": {n: h["val"][-1][1] for n, h in history.items()},
        "val_ppl_history": {n: h["val"] for n, h in history.items()},
        "step_ms": step_ms,
        "temp_mib": step_temp,
        "head_temp_mib": head_temp,
        "time_ratio": step_ms["jaxkl fused"] / step_ms["optax"],
        "memory_ratio": step_temp["jaxkl fused"] / step_temp["optax"],
        "logits_mib": batch * context * len(chars) * 4 / 2**20,
        "vocab": len(chars),
        "characters": len(text),
    }
    if figure:
        plot(history, result, figure)
    if verbose:
        for name in steps_fn:
            print(f"{name:12s} val perplexity {result['val_ppl'][name]:.3f}  step {step_ms[name]:.1f} ms "
                  f"(median)  compiled temp memory {step_temp[name]:.2f} MiB")
        print(f"f32 logits of one batch: {result['logits_mib']:.2f} MiB; compiled temp memory of the head's "
              "loss and gradient alone: " + ", ".join(f"{n} {m:.2f} MiB" for n, m in head_temp.items()))
        print(f"val perplexity: fused {result['val_ppl']['jaxkl fused']:.3f}, optax {result['val_ppl']['optax']:.3f}; "
              f"fused/optax step time {result['time_ratio']:.2f}x, temp memory {result['memory_ratio']:.2f}x")
    return result


def plot(history, result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_bar) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    for (name, h), dash in zip(history.items(), ("-", "--")):  # the curves coincide: dash one
        ax_loss.plot(np.arange(1, len(h["train"]) + 1), h["train"], dash, alpha=0.6, label=f"{name}: train loss")
        steps, ppl = zip(*h["val"])
        ax_loss.plot(steps, np.log(ppl), "o" + dash, label=f"{name}: validation (log perplexity)")
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("nats per character")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    for k, name in enumerate(history):
        measured = [(result["step_ms"][name], "ms", result["step_ms"]["optax"]),
                    (result["temp_mib"][name], "MiB", result["temp_mib"]["optax"])]
        x = np.arange(2) + (k - 0.5) * 0.38
        bars = ax_bar.bar(x, [v / ref for v, _, ref in measured], width=0.38, label=name)
        ax_bar.bar_label(bars, [f"{v:.3g} {unit}" for v, unit, _ in measured], fontsize=7)
    ax_bar.set_xticks(np.arange(2), ["step time\n(median)", "compiled\ntemp memory"])
    ax_bar.set_ylabel("relative to optax")
    ax_bar.set_ylim(0, 1.3)
    ax_bar.legend(loc="lower center")
    fig.suptitle("Equinox char transformer on stdlib docstrings")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--figure", help="save the loss curves and the ratios to this PNG")
    args = parser.parse_args()
    main(steps=args.steps, figure=args.figure)
