"""The adapter's tokenization rules and scores against direct, independent computations with the model."""

from __future__ import annotations

import pytest
import torch

from evaluation.model_adapter import CausalLMAdapter, rolling_windows

from .conftest import build_model, build_tokenizer


@pytest.fixture(scope="module")
def model_and_tok():
    return build_model(max_positions=64), build_tokenizer()


def _reference_ll(model, ctx: list[int], cont: list[int], max_length: int) -> tuple[float, bool]:
    """Score one request the plain way: full forward of the (left-truncated) sequence, full log-softmax."""
    seq = (ctx + cont)[-(max_length + 1):]
    with torch.no_grad():
        logits = model(torch.tensor([seq[:-1]])).logits[0].double()
    lp = torch.log_softmax(logits, -1)[-len(cont):]
    tgt = torch.tensor(cont)
    return lp.gather(1, tgt[:, None]).sum().item(), bool((lp.argmax(-1) == tgt).all())


def test_encode_pair_follows_lm_eval_rules(model_and_tok):
    model, tok = model_and_tok
    ad = CausalLMAdapter(model, tok, batch_size=4, progress=False)
    ctx, cont = ad.encode_pair("Question: sky?\nAnswer: ", "blue")
    # Trailing whitespace moves to the continuation; BOS leads the context; split by the context's token count.
    assert (ctx, cont) == ad.encode_pair("Question: sky?\nAnswer:", " blue")
    assert ctx == tok("Question: sky?\nAnswer:")["input_ids"] and ctx[0] == tok.bos_token_id
    assert cont == tok("Question: sky?\nAnswer: blue")["input_ids"][len(ctx):]
    # Empty context: BOS alone, continuation without special tokens.
    assert ad.encode_pair("", "Hello there") == ([tok.bos_token_id], tok("Hello there", add_special_tokens=False)["input_ids"])
    # A text that already starts with the BOS string gets no second BOS (lm-eval's rule). Our tokenizer reads
    # "<s>" in text as characters (Meta's behaviour) unless split_special_tokens=False, so test with that setting.
    tok.split_special_tokens = False
    try:
        assert ad.tok_encode("<s>Hi")[:2] != [tok.bos_token_id, tok.bos_token_id]
        assert ad.tok_encode("<s>Hi").count(tok.bos_token_id) == 1
    finally:
        tok.split_special_tokens = True


@pytest.mark.parametrize("share_context,split_head", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_loglikelihood_matches_direct_forward(model_and_tok, share_context, split_head, batch_size):
    model, tok = model_and_tok
    ad = CausalLMAdapter(model, tok, batch_size=batch_size, share_context=share_context, progress=False)
    assert ad.scorer.split_head  # transformers' Llama: logits = lm_head(base_model(...).last_hidden_state)
    ad.scorer.split_head = split_head  # also exercise the plain full-logits path
    long_ctx = "word " * 80  # longer than the 64-position model: left truncation
    requests = [("The cat sat on the", " mat"), ("The cat sat on the", " sofa today"), ("The cat sat on the", " mat"),
                ("Answer:", " yes"), ("", "A whole sentence."), (long_ctx, " end"), (long_ctx, " the very end"),
                ("Q: 2+2?\nA:", " 4")]
    got = ad.loglikelihood(requests)
    for (c, k), (ll, greedy) in zip(requests, got):
        ref_ll, ref_greedy = _reference_ll(model, *ad.encode_pair(c, k), max_length=ad.max_length)
        assert ll == pytest.approx(ref_ll, rel=1e-5, abs=1e-4)
        assert greedy == ref_greedy
    assert got[0] == got[2]  # a repeated request gets the same answer


def test_greedy_flag_marks_the_models_own_choice(model_and_tok):
    model, tok = model_and_tok
    ad = CausalLMAdapter(model, tok, batch_size=4, progress=False)
    ids = tok("The weather is")["input_ids"]
    with torch.no_grad():
        nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
    (_, greedy), (_, not_greedy) = ad.scorer.score([(ids, [nxt]), (ids, [(nxt + 1) % 32000])])
    assert greedy is True and not_greedy is False


def test_rolling_windows_match_lm_eval_and_scores_add_up(model_and_tok):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    model, tok = model_and_tok
    ad = CausalLMAdapter(model, tok, batch_size=4, progress=False)
    tokens = list(range(5, 5 + 150))
    ref = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 1, 64, 1)]
    assert rolling_windows(tokens, 1, 64) == [(list(a), list(b)) for a, b in ref]
    # Every token is predicted exactly once.
    assert sum(len(p) for _, p in rolling_windows(tokens, 1, 64)) == len(tokens)
    text = "Some words to score. " * 3
    ids = tok(text, add_special_tokens=False)["input_ids"]
    direct = _reference_ll(model, [tok.bos_token_id], ids, ad.max_length)[0]
    assert ad.loglikelihood_rolling([text], add_special_tokens=False)[0] == pytest.approx(direct, rel=1e-5)


def test_generate_until_is_greedy_and_cut_at_stop_strings(model_and_tok):
    model, tok = model_and_tok
    ad = CausalLMAdapter(model, tok, batch_size=4, progress=False)
    prompts = ["Once upon a time", "Q: hello\nA:"]
    got = ad.generate_until([(p, {"until": [], "max_gen_toks": 8}) for p in prompts])
    for p, (text,) in zip(prompts, got):
        ids = torch.tensor([tok(p)["input_ids"]])
        ref = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
        assert text == tok.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
    stop = got[0][0][3:6]
    cut = ad.generate_until([(prompts[0], {"until": [stop], "max_gen_toks": 8})])[0][0]
    assert cut == got[0][0].split(stop)[0]


PROMPTS = ["Once upon a time", "Q: hello\nA:", "The capital of France is", "def f(x):"]


def test_batches_that_drop_finished_rows_equal_one_at_a_time(model_and_tok):
    model, tok = model_and_tok
    batched = CausalLMAdapter(model, tok, batch_size=4, progress=False)
    full = [g[0] for g in batched.generate_until([(p, {"until": [], "max_gen_toks": 10}) for p in PROMPTS])]
    stop = full[0][4:6]  # row 0 stops early; the others stop wherever this text appears in theirs, if anywhere
    kw = {"until": [stop], "max_gen_toks": 10}
    got = [g[0] for g in batched.generate_until([(p, kw) for p in PROMPTS])]
    alone = CausalLMAdapter(model, tok, batch_size=1, progress=False)
    assert got == [alone.generate_until([(p, kw)])[0][0] for p in PROMPTS]
    assert got == [f.split(stop)[0] for f in full]
    assert got[0] != full[0] and any(g == f for g, f in zip(got, full))  # rows finished at different steps


def test_samples_cut_into_batches_by_rows_equal_one_batch(model_and_tok):
    model, tok = model_and_tok
    kw = {"until": ["\n"], "max_gen_toks": 6, "do_sample": True, "temperature": 1.0, "n": 3}
    requests = [(p, kw) for p in PROMPTS[:3]]
    small = CausalLMAdapter(model, tok, batch_size=4, progress=False)
    plan = small._plan_generation(requests)
    assert [b.rows for b in plan] == [4, 4, 1]  # 9 rows in full batches, not 3 batches of 3
    assert any(s[0] != 0 for b in plan for s in b.samples)  # a prompt's samples span two batches
    got = small.generate_until(requests)
    one_batch = CausalLMAdapter(model, tok, batch_size=64, progress=False)
    assert len(one_batch._plan_generation(requests)) == 1
    assert got == one_batch.generate_until(requests)
    assert all(len(set(g)) > 1 for g in got)  # the samples of a prompt differ from one another


def test_our_model_folder_matches_lm_eval_hflm(tmp_path):
    """A saved LlamaPaperForCausalLM + LlamaPaperTokenizerFast folder: our adapter vs lm-eval's HFLM on it."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from modeling_llama import LlamaPaperConfig, LlamaPaperForCausalLM, LlamaPaperTokenizerFast

    from .conftest import TOKENIZER_MODEL

    torch.manual_seed(0)
    config = LlamaPaperConfig.from_preset("tiny", vocab_size=32000, max_position_embeddings=128)
    LlamaPaperForCausalLM(config).save_pretrained(tmp_path)
    LlamaPaperTokenizerFast(vocab_file=str(TOKENIZER_MODEL)).save_pretrained(tmp_path)
    ours = CausalLMAdapter.from_pretrained(str(tmp_path), device="cpu", batch_size=4, progress=False)
    lm = HFLM(pretrained=str(tmp_path), dtype="float32", softmax_dtype="float32", device="cpu", batch_size=4,
              trust_remote_code=True)
    requests = [("Question: Where is Paris?\nAnswer:", " France"), ("Question: Where is Paris?\nAnswer:", " Texas"),
                ("", "Stereotypes are bad."), ("x " * 200, " overflow"), ("Answer: ", "yes")]
    got = ours.loglikelihood(requests)
    ref = lm.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(requests)], disable_tqdm=True)
    for (ll, greedy), (ref_ll, ref_greedy) in zip(got, ref):
        assert ll == pytest.approx(ref_ll, rel=1e-4) and greedy == ref_greedy


def test_auto_batch_size_gives_the_same_scores(model_and_tok):
    model, tok = model_and_tok
    requests = [("Question: a?\nAnswer:", " yes"), ("Question: a?\nAnswer:", " no"), ("Other context", " x")]
    auto = CausalLMAdapter(model, tok, batch_size="auto", progress=False)
    one = CausalLMAdapter(model, tok, batch_size=1, progress=False)
    assert auto.batch_size > 1 and auto.auto_batch
    for (a, ga), (b, gb) in zip(auto.loglikelihood(requests), one.loglikelihood(requests)):
        assert a == pytest.approx(b, rel=1e-5) and ga == gb
