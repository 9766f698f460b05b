"""Fine-tune our model with a plain `transformers.Trainer` (what `llama-paper finetune` does for you).

    python examples/finetune_trainer.py MODEL_DIR [OUTPUT_DIR]

MODEL_DIR is any saved LlamaPaper folder, e.g. the output of `llama-paper pretrain` or examples/pretrain_tiny.py.
The data are prompt/response pairs; the prompt tokens are labelled -100 so only the response is learnt.
"""

import sys

from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

import modeling_llama  # noqa: F401  (registers LlamaPaper* with the Auto classes)
from training.finetune import PadCollator, encode_record

model_dir = sys.argv[1]
output_dir = sys.argv[2] if len(sys.argv) > 2 else "runs/example-finetune"
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)

pairs = [{"prompt": "Who wrote Hamlet?\n", "response": "William Shakespeare."},
         {"prompt": "Who fell down the rabbit hole?\n", "response": "Alice."}] * 16
train_dataset = [encode_record(pair, tokenizer, max_length=256) for pair in pairs]

args = TrainingArguments(output_dir=output_dir, max_steps=40, per_device_train_batch_size=8, learning_rate=1e-3,
                         adam_beta2=0.95, lr_scheduler_type="cosine", logging_steps=10, save_strategy="no",
                         report_to="none", remove_unused_columns=False)
trainer = Trainer(model=model, args=args, train_dataset=train_dataset,
                  data_collator=PadCollator(tokenizer.eos_token_id), processing_class=tokenizer)
trainer.train()
trainer.save_model(output_dir)  # a normal folder: AutoModelForCausalLM.from_pretrained(output_dir) loads it

inputs = tokenizer("Who wrote Hamlet?\n", return_tensors="pt")
print(tokenizer.decode(model.generate(**inputs, max_new_tokens=8, do_sample=False)[0], skip_special_tokens=True))
