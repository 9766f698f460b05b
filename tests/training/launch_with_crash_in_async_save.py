"""`python -m training.pretrain` that dies (os._exit, no cleanup: as a SIGKILL or a lost node would) while its
background writer is writing the files of checkpoint-$CRASH_AT_STEP. Run by tests/training/test_tensor_parallel.py;
not a pytest module."""

import os
import sys

from torch.distributed.checkpoint import FileSystemWriter

import training.pretrain as pretrain

CRASH_IN = f".tmp-checkpoint-{os.environ['CRASH_AT_STEP']}"
real_write_data = FileSystemWriter.write_data


def write_data(self, plan, planner):
    """The real write, then death of the whole process before the save can complete (and be published)."""
    future = real_write_data(self, plan, planner)
    if CRASH_IN in str(self.path):
        future.wait()  # this rank's shard files are on disk; the checkpoint's .metadata is not
        os._exit(17)
    return future


FileSystemWriter.write_data = write_data
sys.exit(pretrain.main())
