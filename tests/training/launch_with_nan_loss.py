"""`python -m training.pretrain` whose loss is NaN on the micro-batches numbered in $NAN_MICRO_BATCHES (1-based,
per process). Launched by tests/training/test_distributed.py through `accelerate launch` to inject the fault into
every rank of a real 2-process run; not a pytest module."""

import os
import sys

import training.pretrain as pretrain

BROKEN = {int(number) for number in os.environ["NAN_MICRO_BATCHES"].split(",")}
real_compute_loss = pretrain.compute_loss
calls = 0


def compute_loss(model, batch):
    """The real loss, times NaN on the chosen calls."""
    global calls
    calls += 1
    loss = real_compute_loss(model, batch)
    return loss * float("nan") if calls in BROKEN else loss


pretrain.compute_loss = compute_loss
sys.exit(pretrain.main())
