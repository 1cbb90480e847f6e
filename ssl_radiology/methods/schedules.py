"""Per-step schedules for learning rate, weight decay, EMA momentum and temperatures.

Every value is a pure function of the optimizer step, so a resumed run recomputes exactly the values an
uninterrupted run would have used: no scheduler object has to be checkpointed. The cosine shapes come from
``lightly.utils.scheduler`` (the DINO / MAE reference recipes use the same curves).
"""

from __future__ import annotations

from lightly.utils.scheduler import cosine_schedule


def warmup_cosine(step: int, total_steps: int, peak: float, final: float, warmup_steps: int) -> float:
    """Linear warm-up from ``peak / warmup_steps`` to ``peak``, then cosine decay to ``final``.

    The warm-up is clipped to the run length, so a short smoke run still gets a well-defined schedule.
    """
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps)
    step = min(max(int(step), 0), total_steps)
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return cosine(step - warmup_steps, total_steps - warmup_steps, peak, final)


def cosine(step: int, total_steps: int, start: float, end: float) -> float:
    """Half-cosine from ``start`` at step 0 to ``end`` at ``total_steps - 1`` (then held)."""
    total_steps = max(int(total_steps), 1)
    return cosine_schedule(min(max(int(step), 0), total_steps), total_steps, start, end)


def linear_warmup(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear ramp from ``start`` to ``end`` over ``warmup_steps`` (DINO teacher temperature), then ``end``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return float(end)
    return float(start + (end - start) * step / warmup_steps)
