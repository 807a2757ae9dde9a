"""Textual inversion: one new token, named after the output ModelCache (the token
prompts use, diffleet_worker.embeddings), whose embedding alone is trained.

As diffusers' examples/textual_inversion/textual_inversion.py: the token is added to
the tokenizer, the text encoder's token embeddings grow by a row, the row starts from
an existing embedding, and the captions' word for the concept (spec.placeholder) is
replaced by the token. Its start here is the mean of the placeholder's own tokens'
embeddings (diffusers takes an `initializer_token` instead): the concept starts as the
word the captions used.

Where diffusers trains the whole embedding matrix and restores the other rows after
each step, the vector here is a parameter of its own, put in place of the token's row
by a hook on the embedding layer: the other rows cannot change, and AdamW's state and a
checkpoint hold one row, not the matrix's (49408 of them for SD 1.5).
"""

import re
from typing import Any

import torch


class SpecError(ValueError):
    """The spec cannot be trained on this dataset or tokenizer (the message names the
    field): retrying would fail again."""


# The trained vector's name in the optimizer and a checkpoint.
PARAMETER = "text_encoder/token_embedding"


def token_captions(captions: list[str], placeholder: str, token: str) -> list[str]:
    """The captions with each whole-word `placeholder` (any case) replaced by `token`;
    SpecError when no caption has the word: nothing would train the token."""
    word = re.compile(rf"(?<![a-z0-9_-]){re.escape(placeholder)}(?![a-z0-9_-])", re.IGNORECASE)
    replaced = [word.sub(token, caption) for caption in captions]
    if replaced == captions:
        raise SpecError(f"spec.placeholder: no caption of the dataset has the word {placeholder!r}")
    return replaced


class LearnedToken:
    """The new token in the pipeline's tokenizer and text encoder, and its vector."""

    def __init__(self, pipe: Any, token: str, placeholder: str) -> None:
        tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
        if token in tokenizer.get_vocab():
            raise SpecError(f"spec.output.name: {token!r} is already a token of the tokenizer")
        self.token = token
        table = encoder.get_input_embeddings()
        initial = placeholder_mean(tokenizer, table.weight, placeholder)
        tokenizer.add_tokens(token)
        self.id: int = tokenizer.convert_tokens_to_ids(token)
        # No mean resizing: the new row is set below, and its draw would use the global RNG.
        encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        table = encoder.get_input_embeddings()
        with torch.no_grad():
            table.weight[self.id] = initial
        self.vector = torch.nn.Parameter(initial.clone().unsqueeze(0))
        table.register_forward_hook(self._substitute)

    def _substitute(
        self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], looked_up: torch.Tensor
    ) -> torch.Tensor:
        """The looked-up embeddings with the token's positions taken from the vector."""
        ids = inputs[0]
        at_token = (ids == self.id).unsqueeze(-1)
        return torch.where(at_token, self.vector.to(looked_up.dtype), looked_up)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """diffusers' embedding format: {token: tensor[1, dim]}, which
        `pipe.load_textual_inversion` reads."""
        return {self.token: self.vector.detach().clone().contiguous()}


def placeholder_mean(tokenizer: Any, weight: torch.Tensor, placeholder: str) -> torch.Tensor:
    """The mean of the embeddings of the tokens the placeholder is spelt with."""
    ids = tokenizer(placeholder, add_special_tokens=False).input_ids
    return weight[ids].detach().mean(dim=0)
