"""Equinox: GRPO with a KL penalty teaches a small recurrent policy to write digits with a given sum.

    python docs/examples/grpo_toy.py --figure grpo-toy.png   # 20-30 s on 2 busy cores
    python docs/examples/grpo_toy.py --kl-coef 0.2          # a tighter leash: less reward, less KL

The prompt is a target sum in two digits and "=", e.g. ``23=``; the policy writes K = 4 digits
after it (its output vocabulary is the ten digits), and the reward is verifiable:

    reward = max(0, 1 - |sum of the digits - target| / TOLERANCE)

1 for an exact sum, partial credit within TOLERANCE of it. Targets are drawn from 0 to 9K, all
reachable. Each step is one round of GRPO (Shao et al., 2024):

* P prompts, G completions each, sampled from the current policy;
* advantages relative to the group: (reward - group mean) / (group std + eps);
* the log-prob and entropy of every sampled token from ``jaxkl.fused_linear_token_logprobs`` on
  the policy's final hidden states, flattened to [P*G*K, D]; the reference log-probs the same
  way from the frozen initial parameters;
* ``jaxkl.policy_loss(loss_type="grpo")`` with a k3 KL penalty to that reference and a small
  entropy bonus; one Adam step.

The last line printed holds the mean reward of the first and of the last ten steps and the KL to
the reference. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxkl

EQUALS = 10  # token ids: the digits 0-9 are themselves, "=" is 10
PROMPT_LENGTH = 3  # two digits of the target, then "="
TOLERANCE = 9.0  # reward 0 at this distance from the target sum, or further
EPS = 1e-4  # in the advantage's denominator: a group of equal rewards gets advantage 0


class Policy(eqx.Module):
    """A GRU over the tokens; `hidden(...) @ head` are the logits over the next digit."""

    embedding: eqx.nn.Embedding
    cell: eqx.nn.GRUCell
    norm: eqx.nn.LayerNorm
    head: jax.Array  # [D, 10]: the fused log-probs take `hidden @ head`

    def __init__(self, *, width, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embedding = eqx.nn.Embedding(EQUALS + 1, width, key=k1)
        self.cell = eqx.nn.GRUCell(width, width, key=k2)
        self.norm = eqx.nn.LayerNorm(width)
        self.head = jax.random.normal(k3, (width, 10)) / jnp.sqrt(width)

    def advance(self, state, token):
        """The recurrent state after reading one more token."""
        return self.cell(self.embedding(token), state)

    def hidden(self, tokens):
        """Final hidden states `[T, D]` of one sequence `[T]`: row t predicts token t + 1."""
        def read(state, token):
            state = self.advance(state, token)
            return state, state

        _, states = jax.lax.scan(read, jnp.zeros(self.cell.hidden_size), tokens)
        return jax.vmap(self.norm)(states)


@eqx.filter_jit
def init_policy(width, key):
    """A new `Policy`, its initialisers compiled as one program (run eagerly, each compiles alone)."""
    return Policy(width=width, key=key)


def encode_prompts(targets):
    """`[B]` target sums (0 to 99) as the prompt tokens `[B, 3]`: tens, units, "="."""
    targets = jnp.asarray(targets)
    return jnp.stack([targets // 10, targets % 10, jnp.full_like(targets, EQUALS)], axis=-1)


def reward(targets, completions):
    """`[B]` rewards of the digit strings `completions` `[B, K]` for the sums `targets` `[B]`."""
    error = jnp.abs(jnp.sum(completions, axis=-1) - targets).astype(jnp.float32)
    return jnp.maximum(0.0, 1.0 - error / TOLERANCE)


def sample(model, prompts, digits, key):
    """`digits` tokens after each prompt `[B, 3]`, drawn from the policy at temperature 1: `[B, K]`.

    The recurrent state is carried from token to token (the GRU's counterpart of a KV cache), so
    each step's logits are those that `model.hidden` gives for the whole sequence afterwards.
    """
    advance = jax.vmap(model.advance)
    state = jnp.zeros((prompts.shape[0], model.cell.hidden_size))
    state = jax.lax.scan(lambda s, t: (advance(s, t), None), state, prompts.T)[0]

    def write(state, key):
        token = jax.random.categorical(key, jax.vmap(model.norm)(state) @ model.head)
        return advance(state, token), token

    return jax.lax.scan(write, state, jax.random.split(key, digits))[1].T


def token_logprobs(hidden, head, tokens):
    """Log-prob and entropy `[N]` of `tokens` `[N]` under `softmax(hidden @ head)`, fused."""
    return jaxkl.fused_linear_token_logprobs(hidden, head, tokens, return_entropy=True)


def completion_logprobs(model, prompts, completions):
    """Log-prob and entropy `[B, K]` of each completion token given the prompt and the tokens before it."""
    sequences = jnp.concatenate([prompts, completions], axis=1)
    k = completions.shape[1]
    # Row PROMPT_LENGTH - 1 (after "=") predicts the first digit; the last row predicts nothing.
    hidden = jax.vmap(model.hidden)(sequences)[:, PROMPT_LENGTH - 1:PROMPT_LENGTH - 1 + k]
    logprobs, entropy = token_logprobs(hidden.reshape(-1, hidden.shape[-1]), model.head, completions.reshape(-1))
    return logprobs.reshape(completions.shape), entropy.reshape(completions.shape)


def group_advantages(rewards, group):
    """GRPO's advantages `[P*G]`: each reward against the mean and std of its group of G."""
    r = rewards.reshape(-1, group)
    return ((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + EPS)).reshape(-1)


def make_step(static, optimizer, *, prompts, group, digits, kl_coef, entropy_coef):
    """One GRPO step: sample, score, one Adam update on the policy's arrays `params`."""

    def step(params, ref_params, opt_state, key):
        k_targets, k_sample = jax.random.split(key)
        targets = jnp.repeat(jax.random.randint(k_targets, (prompts,), 0, 9 * digits + 1), group)
        prompt_tokens = encode_prompts(targets)
        completions = sample(eqx.combine(params, static), prompt_tokens, digits, k_sample)
        rewards = reward(targets, completions)
        advantages = group_advantages(rewards, group)
        ref_logprobs, _ = completion_logprobs(eqx.combine(ref_params, static), prompt_tokens, completions)

        def loss_fn(params):
            logprobs, entropy = completion_logprobs(eqx.combine(params, static), prompt_tokens, completions)
            # On-policy: the completions were just sampled from these parameters and get one
            # update, so the old log-probs are the current ones without gradient (ratio 1, no
            # clipping; TRL's default of one iteration per batch). Several updates per batch
            # would keep these from the first and let the clip act on the later ones. Every
            # completion has exactly K real tokens, so no `where` mask (variable lengths need one).
            return jaxkl.policy_loss(
                logprobs, jax.lax.stop_gradient(logprobs), advantages, loss_type="grpo",
                ref_logprobs=ref_logprobs, kl_coef=kl_coef, kl_estimator="k3",
                entropy=entropy, entropy_coef=entropy_coef)

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        metrics = {"reward": rewards.mean(), "exact": jnp.mean(rewards == 1.0), "kl": stats.kl,
                   "entropy": stats.entropy, "loss": loss}
        return optax.apply_updates(params, updates), opt_state, metrics, (targets, completions, rewards)

    return step


def main(*, steps=300, digits=4, prompts=32, group=8, width=64, learning_rate=3e-3, kl_coef=0.04,
         entropy_coef=0.001, log_every=25, seed=0, figure=None, verbose=True):
    """Trains the policy with GRPO; returns the per-step curves and the first and final values."""
    # "rbg", XLA's own bit generator: on CPU its kernels compile in well under a second, where the
    # default threefry's take up to seconds each (the initialisers, the sampler).
    key, k_model = jax.random.split(jax.random.key(seed, impl="rbg"))
    model = init_policy(width, k_model)
    params, static = eqx.partition(model, eqx.is_array)
    ref_params = params  # frozen: the reference is the initialisation
    optimizer = optax.adam(learning_rate)
    opt_state = optimizer.init(params)
    step = jax.jit(make_step(static, optimizer, prompts=prompts, group=group, digits=digits,
                             kl_coef=kl_coef, entropy_coef=entropy_coef))

    history = {name: [] for name in ("reward", "exact", "kl", "entropy", "loss")}
    start = time.perf_counter()
    for i in range(steps):
        key, k_step = jax.random.split(key)
        params, opt_state, metrics, batch = step(params, ref_params, opt_state, k_step)
        for name, value in metrics.items():
            history[name].append(float(value))
        if verbose and ((i + 1) % log_every == 0 or i == 0 or i + 1 == steps):
            print(f"step {i + 1:4d}  mean reward {history['reward'][-1]:.3f}  exact {history['exact'][-1]:.3f}"
                  f"  KL to reference {history['kl'][-1]:.4f}  entropy {history['entropy'][-1]:.3f}")
    seconds = time.perf_counter() - start

    # The batch reward is noisy (P*G samples): first and final are means over a tenth of the run, <= 10 steps.
    window = max(1, min(10, steps // 10))
    result = {
        "history": history,
        "first_reward": float(np.mean(history["reward"][:window])),
        "final_reward": float(np.mean(history["reward"][-window:])),
        "first_exact": float(np.mean(history["exact"][:window])),
        "final_exact": float(np.mean(history["exact"][-window:])),
        "final_kl": float(np.mean(history["kl"][-window:])),
        "window": window,
        "seconds": seconds,
        "model": eqx.combine(params, static),
    }
    if figure:
        plot(history, window, figure)
    if verbose:
        targets, completions, rewards = (np.asarray(x) for x in batch)
        for b in range(0, len(targets), max(1, len(targets) // 4))[:4]:  # a few of the last samples
            print(f"  {targets[b]:02d}={''.join(map(str, completions[b]))}  reward {rewards[b]:.2f}")
        print(f"final mean reward {result['final_reward']:.3f} (first {result['first_reward']:.3f}), exact sums "
              f"{result['final_exact']:.3f} (first {result['first_exact']:.3f}), KL to the reference "
              f"{result['final_kl']:.4f}: means over {window} steps; {steps} steps in {seconds:.1f} s with compilation")
    return result


def plot(history, window, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(history["reward"]) + 1)

    def smooth(values):  # moving mean over `window` steps, over what is there at the start
        c = np.cumsum(np.insert(np.asarray(values), 0, 0.0))
        lo = np.maximum(0, np.arange(1, len(values) + 1) - window)
        return (c[1:] - c[lo]) / (np.arange(1, len(values) + 1) - lo)

    fig, (ax_reward, ax_kl) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, label in (("reward", "mean reward"), ("exact", "fraction of exact sums")):
        line, = ax_reward.plot(steps, history[name], alpha=0.3)
        ax_reward.plot(steps, smooth(history[name]), color=line.get_color(), label=f"{label} ({window}-step mean)")
    ax_reward.set_xlabel("GRPO step")
    ax_reward.set_ylim(0, 1.02)
    ax_reward.grid(alpha=0.3)
    ax_reward.legend(loc="lower right", fontsize=8)
    ax_reward.set_title("reward of the sampled completions")
    # k3 per token is (r - 1) - log r with r = pi_ref / pi: a token the policy has nearly given up
    # but the reference still likes makes r large, so single batches spike; a log scale shows all.
    ax_kl.plot(steps, history["kl"], color="C2", alpha=0.3)
    ax_kl.plot(steps, smooth(history["kl"]), color="C2", label=f"{window}-step mean")
    ax_kl.set_yscale("symlog", linthresh=0.01)  # log above 0.01; the first step's KL is exactly 0
    ax_kl.set_xlabel("GRPO step")
    ax_kl.set_ylabel("nats per token")
    ax_kl.grid(alpha=0.3)
    ax_kl.legend(loc="lower right")
    ax_kl.set_title("KL(policy || initial policy), k3 estimate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--digits", type=int, default=4, help="digits K in a completion")
    parser.add_argument("--prompts", type=int, default=32, help="prompts P a step")
    parser.add_argument("--group", type=int, default=8, help="completions G a prompt")
    parser.add_argument("--width", type=int, default=64, help="the policy's hidden size D")
    parser.add_argument("--kl-coef", type=float, default=0.04, help="weight of the KL penalty")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", help="save the reward and KL curves to this PNG")
    args = parser.parse_args()
    main(steps=args.steps, digits=args.digits, prompts=args.prompts, group=args.group, width=args.width,
         kl_coef=args.kl_coef, seed=args.seed, figure=args.figure)
