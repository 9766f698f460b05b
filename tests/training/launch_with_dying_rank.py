"""`python -m training.pretrain` whose process of global rank $DIE_RANK kills itself with SIGKILL on its micro-batch
number $DIE_AT_CALL (1-based), in the first attempt of an elastic launch only (TORCHELASTIC_RESTART_COUNT 0): a
worker lost mid-training, as a hardware fault loses it. Launched by tests/training/test_multinode.py; not a pytest
module."""

import os
import signal
import sys

import training.pretrain as pretrain

DYING = (os.environ["RANK"] == os.environ["DIE_RANK"] and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0")
real_compute_loss = pretrain.compute_loss
calls = 0


def compute_loss(model, batch):
    """The real loss, except that the chosen call of the chosen rank never returns."""
    global calls
    calls += 1
    if DYING and calls == int(os.environ["DIE_AT_CALL"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_compute_loss(model, batch)


pretrain.compute_loss = compute_loss
sys.exit(pretrain.main())
