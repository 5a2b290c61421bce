"""Training: self-supervised pretraining, supervised fine-tuning (LoRA or full), preference tuning (DPO) and
classification heads. Every trainer validates its inputs before the first step and writes a Hugging Face
checkpoint, so the rest of fmstack (the transformers engine, export to GGUF) can use the result."""
