"""Textual-inversion embeddings for one job: each embedding's vectors added to the text
encoder under its token (the ModelCache's name, which the prompts use), and removed
again afterwards, so the next job on this hot pipeline runs the base model exactly.

SD 1.5 embeddings are one tensor (diffusers' or A1111's format); SDXL ones hold a
`clip_l` and a `clip_g` tensor, one for each of its text encoders."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

# SDXL embedding keys, for its text encoder and text_encoder_2.
SDXL_KEYS = ("clip_l", "clip_g")


@dataclass(frozen=True)
class LoadedEmbedding:
    token: str
    path: Path


@contextmanager
def applied(pipe: Any, embeddings: list[LoadedEmbedding]) -> Iterator[None]:
    if not embeddings:
        yield
        return
    encoders = text_encoders(pipe)
    try:
        for embedding in embeddings:
            vectors = load_file(embedding.path)
            if len(encoders) == 1:
                pipe.load_textual_inversion(vectors, token=embedding.token)
                continue
            for key, (tokenizer, text_encoder) in zip(SDXL_KEYS, encoders, strict=True):
                if key not in vectors:
                    raise ValueError(f"embedding {embedding.token}: an SDXL embedding needs {key}")
                pipe.load_textual_inversion(
                    vectors[key],
                    token=embedding.token,
                    tokenizer=tokenizer,
                    text_encoder=text_encoder,
                )
        yield
    finally:
        for tokenizer, text_encoder in encoders:
            if _added_tokens(tokenizer):
                # No tokens named: every token added (including multi-vector ones).
                pipe.unload_textual_inversion(tokenizer=tokenizer, text_encoder=text_encoder)


def text_encoders(pipe: Any) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs of the pipeline: one for SD 1.5, two for SDXL."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _added_tokens(tokenizer: Any) -> bool:
    return any(not token.special for token in tokenizer.added_tokens_decoder.values())
