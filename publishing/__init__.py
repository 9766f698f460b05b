"""Publishing: model cards, `llama-paper push` and a local Hub-compatible server. Builds on modeling_llama only."""
