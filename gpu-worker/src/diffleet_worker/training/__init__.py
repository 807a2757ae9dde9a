"""Training in the worker (issue 20): a TrainingJobSpec, a checkpoint of the base model
and a dataset of captioned images in, a LoRA or a textual-inversion embedding (one
safetensors file) out.

dataset.py reads a dataset from S3; batches.py turns it into seeded batches; lora.py puts
the adapters on the UNet (and the text encoder); embedding.py adds the token whose
embedding textual inversion learns; trainer.py runs the steps; checkpoints.py
and store.py save and find the state a stopped training resumes from; validation.py
renders the validation prompts; output.py writes the result with its metadata.
"""
