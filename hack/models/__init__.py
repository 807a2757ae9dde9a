"""Test models built offline: a CLIP tokenizer, tiny seeded Stable Diffusion pipelines, a
LoRA, a ControlNet and micro-shapes (a micro model trained here that draws coloured
shapes), plus their registration as ModelCaches. docs/models.md describes them."""
