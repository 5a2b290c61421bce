"""Training: self-supervised pretraining, supervised fine-tuning (LoRA or full), preference tuning (DPO) and
classification heads. Every trainer validates its inputs before the first step and writes a Hugging Face
checkpoint, so the rest of fmstack (the transformers engine, export to GGUF) can use the result.

One module per trainer (`pretrain`, `finetune`, `dpo`, `classify`), and what they share: `configs` (each trainer's
run as one object), `chat_data` (chat-format datasets), `base_model` (resolving and checking the model to start
from), `checkpoint` (resumable state), `memory` (refusing a run that cannot fit) and `trainer_progress`.

Layer: imports `fmstack.model.data` (tokenizers and packed blocks), `fmstack.model.convert` and `fmstack.core`.
"""
