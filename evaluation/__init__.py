"""The paper's benchmarks as lm-eval-style tasks under two protocols (`harness`, `paper`), for any causal LM.

Entry points: `model_adapter.CausalLMAdapter` (loglikelihood, loglikelihood_rolling, generate_until),
`runner.evaluate` / `runner.evaluate_task`, `tasks.REGISTRY` / `tasks.GROUPS`, and `llama-paper eval` (`cli`).
"""
