"""Learning-rate schedules: the learning rate of each SGD step, as a pure function.

    lr_at(step=0, total_steps=550, base_lr=0.1, schedule="cosine", warmup_steps=0)    # 0.1
    lr_at(step=549, total_steps=550, base_lr=0.1, schedule="cosine", warmup_steps=0)  # 0.0

Steps are 0-based and counted over the whole run (epochs x steps per epoch). The first
`warmup_steps` steps ramp linearly up to `base_lr` (step s gets base_lr * (s + 1) / warmup_steps,
so no step is wasted at lr 0 and the last warm-up step reaches base_lr). After the warm-up,
`constant` keeps base_lr; `linear` and `cosine` decay from base_lr at the first step after the
warm-up to exactly 0 at the last step of the run. A decay phase of a single step keeps base_lr
(there is nothing to decay over, and a run of one step at lr 0 would not train at all).

The trainers read a table of every step's learning rate, made once per run (`lr_table`; a
population scales one shared `decay_factors` by each member's base); a constant schedule
without warm-up needs no table at all.
"""

from __future__ import annotations

import functools
import math


def is_constant(schedule: str, warmup_steps: int) -> bool:
    """True when every step uses the base learning rate (nothing to compute per step)."""
    return schedule == "constant" and warmup_steps == 0


def lr_at(step: int, total_steps: int, base_lr: float, schedule: str, warmup_steps: int) -> float:
    """Learning rate of 0-based `step` in a run of `total_steps` steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    decay_steps = total_steps - 1 - warmup_steps  # from the first decay step to the last step
    if decay_steps <= 0:
        return base_lr
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    if schedule == "linear":
        return base_lr * (1.0 - progress)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def lr_table(total_steps: int, base_lr: float, schedule: str, warmup_steps: int) -> list[float]:
    """`lr_at` for every step of the run, in order, to the last bit: the warm-up's steps from
    `lr_at` itself, every later step as base_lr times its `decay_factors` entry."""
    ramp = warmup_lrs(total_steps, base_lr, schedule, warmup_steps)
    factors = decay_factors(total_steps, schedule, warmup_steps)
    return ramp + [base_lr * factor for factor in factors[len(ramp) :]]


def warmup_lrs(total_steps: int, base_lr: float, schedule: str, warmup_steps: int) -> list[float]:
    """`lr_at` for the warm-up's steps of the run (none without a warm-up): the part of a table
    that is not base_lr times a shared `decay_factors` entry."""
    warmup = min(warmup_steps, total_steps)
    return [lr_at(s, total_steps, base_lr, schedule, warmup_steps) for s in range(warmup)]


@functools.lru_cache(maxsize=16)
def decay_factors(total_steps: int, schedule: str, warmup_steps: int) -> tuple[float, ...]:
    """Each step's learning rate after the warm-up as a fraction of the base (1.0 for the
    warm-up's steps, which `lr_at` computes from the base): the same for every learning rate,
    so a population computes it once (a cosine run at batch 16 has 34,380 steps).

    base_lr * factor is exactly `lr_at`: linear's base_lr * (1 - progress) is that product,
    and cosine's base_lr * 0.5 * (1 + cos) scales by 0.5, a power of two, either way round."""
    return tuple(
        1.0 if step < warmup_steps else lr_at(step, total_steps, 1.0, schedule, warmup_steps)
        for step in range(total_steps)
    )
