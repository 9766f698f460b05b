"""Pre-train a tiny LLaMA with the paper's recipe from Python, then load the result with the Auto classes.

    python examples/pretrain_tiny.py [OUTPUT_DIR]

The same run from the shell: `llama-paper pretrain --preset tiny --output-dir OUTPUT_DIR`; on 2 processes with
DeepSpeed ZeRO-3: `accelerate launch --config_file training/configs/cpu-zero3.yaml -m training.pretrain --preset tiny`.
"""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import modeling_llama  # noqa: F401  (registers LlamaPaper* with the Auto classes)
from training.pretrain import pretrain
from training.run_config import RunConfig

output_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/example-tiny"
run = RunConfig.from_dict({"output_dir": output_dir, "max_steps": 60, "save_steps": 20},
                          base=RunConfig.from_preset("tiny"))  # a 512-piece tokenizer is trained first
summary = pretrain(run, overwrite=True)  # replaces an earlier run of this example
print({source: round(result["perplexity"], 1) for source, result in summary["heldout"].items()})

model = AutoModelForCausalLM.from_pretrained(output_dir)
tokenizer = AutoTokenizer.from_pretrained(output_dir)
inputs = tokenizer("ALICE:", return_tensors="pt")
torch.manual_seed(0)
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=30, do_sample=True, top_k=40)[0]))
