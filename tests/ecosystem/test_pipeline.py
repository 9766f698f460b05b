"""transformers' `pipeline("text-generation")` on our saved folder, with no glue."""

from __future__ import annotations

from transformers import pipeline

from modeling_llama import LlamaPaperForCausalLM
from modeling_llama.generate import generate_text, load_model_and_tokenizer

PROMPT = "The capital of France is"


def test_text_generation_pipeline_gives_our_greedy_tokens(tiny_folder):
    model, tokenizer = load_model_and_tokenizer(tiny_folder, dtype="float32")
    ours = generate_text(model, tokenizer, PROMPT, max_new_tokens=12, temperature=0)
    prompt_ids = tokenizer(PROMPT)["input_ids"]
    expected = model.generate(**tokenizer(PROMPT, return_tensors="pt"), max_new_tokens=12, do_sample=False,
                              pad_token_id=tokenizer.eos_token_id)[0].tolist()

    generator = pipeline("text-generation", model=str(tiny_folder), dtype="float32")
    assert isinstance(generator.model, LlamaPaperForCausalLM)
    out = generator(PROMPT, max_new_tokens=12, do_sample=False, return_tensors=True)[0]["generated_token_ids"]
    assert out == expected and out[: len(prompt_ids)] == prompt_ids
    assert len(set(out[len(prompt_ids):])) > 1  # a real continuation, not one token repeated
    text = generator(PROMPT, max_new_tokens=12, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert text == ours
