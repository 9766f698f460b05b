"""The paper's pre-training data pipeline (§2.1) on Hugging Face datatrove: one pipeline per source, token shards.

    llama-paper prepare-data --config training/configs/data/paper_redpajama.yaml --output-dir OUT --tasks 64

Modules: `config` (the data YAML), `sources` (the seven sources' stage chains), `filters` / `formatters` (our
steps where datatrove has none), `tokenize` (SentencePiece token shards), `executors` (local/Slurm/Ray), `report`
(Table 1), `models` (training the classifier and the n-gram model), `cli`.
"""
