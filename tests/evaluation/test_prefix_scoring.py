"""Continuation positions scored in chunks (evaluation/prefix_scoring.py) equal one log-softmax over all of them."""

import torch

from evaluation import prefix_scoring
from evaluation.prefix_scoring import _score_positions


def test_chunked_scoring_equals_one_log_softmax_over_every_position():
    torch.manual_seed(0)
    rows = 2 * prefix_scoring.SCORED_ROWS + 45  # three chunks, the last one partial
    head = torch.nn.Linear(32, 500, bias=False)
    hidden = torch.randn(rows, 32)
    logits = head(hidden).detach()
    targets = torch.randint(0, 500, (rows,))
    targets[::7] = logits[::7].argmax(-1)  # some positions are greedy hits
    lp = torch.log_softmax(logits, -1)
    expected_ll, expected_hits = lp.gather(1, targets[:, None])[:, 0], (lp.argmax(-1) == targets).tolist()
    with torch.no_grad():
        ll, hits = _score_positions(hidden, targets, head)  # through the projection, chunk by chunk
    assert torch.allclose(ll, expected_ll, atol=1e-5, rtol=0) and hits == expected_hits and any(hits)
    ll, hits = _score_positions(logits, targets, None)  # logits given
    assert torch.equal(ll, expected_ll) and hits == expected_hits
