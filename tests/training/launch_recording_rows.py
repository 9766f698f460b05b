"""`python -m training.pretrain` that appends, per rank, the (source, epoch, window) rows each token-shard batch
read to $ROWS_DIR/rank<r>.jsonl. Launched by tests/training/test_token_shards.py through `accelerate launch`; not a
pytest module."""

import json
import os
import sys
from pathlib import Path

import training.pretrain as pretrain
from training.data.token_shards import TokenShardStream

real_next_batch = TokenShardStream.next_batch


def next_batch(self, micro_batch_size):
    """The real batch; its rows' identities logged for the test."""
    batch = real_next_batch(self, micro_batch_size)
    with (Path(os.environ["ROWS_DIR"]) / f"rank{self.rank}.jsonl").open("a") as handle:
        handle.write(json.dumps({"sequence": self.sequence, "rows": self.last_rows,
                                 "first_tokens": batch[:, :4].tolist()}) + "\n")
    return batch


TokenShardStream.next_batch = next_batch
sys.exit(pretrain.main())
