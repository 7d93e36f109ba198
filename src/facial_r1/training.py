"""Helpers both training stages (sft.py, grpo.py) share: resuming, and the optional wall-time guard.

Budgets are counted in optimizer steps (TRL's `max_steps`), so the same command trains the
same model on any machine; `max_train_minutes` is only a guard against a runaway run, off in
the shipped configs, and a run it stops is not reproducible.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from transformers import TrainerCallback

log = logging.getLogger(__name__)


def has_checkpoint(output_dir: str, resume: bool) -> bool:
    return resume and any(Path(output_dir).glob("checkpoint-*"))


class TimeLimit(TrainerCallback):
    """Stop training after a wall-clock budget (a guard; the budget itself is `max_steps`)."""

    def __init__(self, minutes: float):
        self.seconds, self.start = minutes * 60, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() - self.start > self.seconds:
            log.warning("max_train_minutes reached at step %d: stopping (this run is not reproducible)",
                        state.global_step)
            control.should_training_stop = True
            control.should_save = True
