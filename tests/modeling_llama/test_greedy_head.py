"""The certified greedy head (modeling_llama/greedy_head.py): its bound holds, and it returns the f32 argmax even where
the fp16 approximation alone ranks the rows wrongly."""

from __future__ import annotations

import torch

from modeling_llama.greedy_head import CertifiedGreedyHead


def fp16_ulp(x: torch.Tensor) -> torch.Tensor:
    """The fp16 spacing above |x| at each value of x (finite range): the next fp16 magnitude minus this one."""
    h = x.half()
    return ((h.view(torch.int16) + 1).view(torch.float16).float() - h.float()).abs()


def test_error_bound_holds_against_float64():
    torch.manual_seed(0)
    weight = torch.randn(3000, 64) * 0.05
    weight[7] *= 40  # rows of very different scales: the bound is one for all rows
    head = CertifiedGreedyHead(weight)
    hidden = torch.cat([torch.randn(40, 64), 1e3 * torch.randn(4, 64), 1e-3 * torch.randn(4, 64)])
    approx, err = head.bounds(hidden)
    exact = hidden.double() @ weight.double().T
    assert ((exact - approx.double()).abs() <= err.double()).all()
    assert (err < 0.01 * exact.std(-1, keepdim=True)).float().mean() > 0.99  # tight: all but the outlier row
    assert torch.equal(head.argmax(hidden), torch.nn.functional.linear(hidden, weight).argmax(-1))


def test_near_tie_the_fp16_copy_gets_wrong_is_resolved_by_the_exact_recompute():
    """Row 1's exact logit is the largest, but its fp16 copy rounds its advantage away, while row 0's rounds up."""
    torch.manual_seed(1)
    dim = 64
    hidden = torch.randn(1, dim)
    sign = hidden[0].sign()
    base = (torch.randn(dim) * 0.05 + 0.2 * hidden[0] / hidden[0].norm()).half().float()  # fp16-exact: copied as is
    ulp = fp16_ulp(base)
    row0 = base.clone()
    j = int(hidden[0].abs().argmax())
    row0[j] += 0.55 * ulp[j] * sign[j]  # rounds to base + 1 ulp: the copy gains more than the row has
    row1 = base + 0.45 * ulp * sign  # every coordinate rounds back to base: the copy loses all of it
    others = torch.randn(500, dim) * 0.05
    others -= (others @ hidden[0])[:, None] * hidden[0] / hidden[0].dot(hidden[0])  # logits ~0, below the pair
    weight = torch.cat([row0[None], row1[None], others])
    assert (row0 @ hidden[0]) > 0.5  # the pair is far above the rest (whose logits are ~0)

    head = CertifiedGreedyHead(weight)
    approx = torch.ops.quantized.linear_dynamic_fp16(hidden, head.packed)
    reference = torch.nn.functional.linear(hidden, weight)
    assert int(approx.argmax(-1)) == 0  # the compressed head alone picks row 0 ...
    assert int(reference.argmax(-1)) == 1  # ... the f32 logits pick row 1 ...
    assert int(head.argmax(hidden)) == 1  # ... and so does the certified head
    # Many contenders within the bound (more than the candidates kept): the full f32 fallback gives the answer.
    crowd = torch.cat([row1[None].expand(20, -1) + 1e-9 * torch.randn(20, dim), weight])
    assert torch.equal(CertifiedGreedyHead(crowd).argmax(hidden), torch.nn.functional.linear(hidden, crowd).argmax(-1))


def test_ties_go_to_the_first_row_as_in_argmax():
    torch.manual_seed(2)
    weight = torch.randn(300, 32) * 0.05
    hidden = torch.randn(3, 32)
    best = (weight.double() * hidden.double()[:, None]).sum(-1).argmax(-1)
    tied = torch.cat([weight, weight[best]])  # exact copies of each winner at higher ids
    assert torch.equal(CertifiedGreedyHead(tied).argmax(hidden), best)
    # (F.linear itself need not pick the first copy: MKL sums rows in different blocks in different orders.)


def test_the_copy_notices_a_weight_changed_in_place():
    from modeling_llama.greedy_head import greedy_head_for

    model = torch.nn.Module()
    model.lm_head = torch.nn.Linear(16, 50, bias=False)
    model.get_output_embeddings = lambda: model.lm_head
    heads: dict = {}
    first = greedy_head_for(model, heads)
    assert greedy_head_for(model, heads) is first
    with torch.no_grad():
        model.lm_head.weight.mul_(-1)  # e.g. an optimizer step
    second = greedy_head_for(model, heads)
    assert second is not first
    hidden = torch.randn(4, 16)
    assert torch.equal(second.argmax(hidden), model.lm_head(hidden).argmax(-1))
    model.lm_head = torch.nn.Linear(16, 50, bias=True)  # a bias: the head does not apply
    assert greedy_head_for(model, heads) is None
