"""Checkpoint conversions between our folders and other layouts (Meta's consolidated.NN.pth, ...).

Kept out of the model's own sources: `save_pretrained` copies only the files the model, config and tokenizer
modules import, so nothing here travels with a saved folder's remote code.
"""
