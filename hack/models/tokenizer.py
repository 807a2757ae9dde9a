"""A CLIP tokenizer built offline: byte-level BPE whose merges spell out a fixed word list.

The vocabulary follows CLIP's layout: the 256 byte symbols, the same with the end-of-word
suffix, one token per merge in merge order, then the start and end tokens. The merges are
learnt here by plain BPE (most frequent pair first, ties broken by the pair's text), so
every word of the list encodes to exactly one token and the files are the same bytes on
every build.
"""

import itertools
import json
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from transformers import CLIPTokenizer

END_OF_WORD = "</w>"
START_TOKEN = "<|startoftext|>"  # noqa: S105 - a token of the vocabulary, not a secret
END_TOKEN = "<|endoftext|>"  # noqa: S105 - a token of the vocabulary, not a secret
MAX_LENGTH = 77

SHAPE_COLOURS = ("red", "green", "blue")
SHAPE_KINDS = ("circle", "square", "triangle")

# The words of the shapes captions, then common English words for other prompts.
CAPTION_WORDS = ("a", "an", "on", "white", "background", *SHAPE_COLOURS, *SHAPE_KINDS)
COMMON_TEXT = """
the of and to in is it you that he was for are as with his they at be this have from or
one had by word but not what all were we when your can said there use each which she do
how their if will up other about out many then them these so some her would make like him
into time has look two more write go see number no way could people my than first water
been call who oil its now find long down day did get come made may part over new sound take
only little work know place year live me back give most very after thing our just name good
sentence man think say great where help through much before line right too mean old any same
tell boy follow came want show also around form three small set put end does another well
large must big even such because turn here why ask went men read need land different home us
move try kind hand picture again change off play spell air away animal house point page letter
mother answer found study still learn should world high every near add food between own below
country plant last school father keep tree never start city earth eye light thought head under
story saw left few while along might close something seem next hard open example begin life
always those both paper together got group often run important until children side feet car
mile night walk sea began grow took river four carry state once book hear stop without second
later miss idea enough eat face watch far really almost let above girl sometimes mountain cut
young talk soon list song being leave family photo photograph painting drawing portrait sketch
art style detailed high quality beautiful dark bright colour color colorful black yellow orange
purple pink brown grey gray cat dog bird fish horse flower sky cloud sun moon star forest
street building castle ocean beach snow rain fire glass stone wood metal gold silver shape
shapes circles squares triangles cube sphere ball box tiny simple flat centre center top bottom
corner middle blurry ugly bad lowres watermark text cartoon anime realistic sharp soft shadow
"""
COMMON_WORDS = tuple(COMMON_TEXT.split())


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    characters = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, characters, strict=True)}


def word_symbols(word: str, byte_map: dict[int, str]) -> tuple[str, ...]:
    """A word as BPE starts from it: one symbol per byte, the last one marked end-of-word."""
    symbols = [byte_map[byte] for byte in word.encode()]
    symbols[-1] += END_OF_WORD
    return tuple(symbols)


def learn_merges(words: list[str], byte_map: dict[int, str]) -> list[tuple[str, str]]:
    """Plain BPE over `words` until each is one symbol; ties go to the smallest pair."""
    corpus = Counter(word_symbols(word, byte_map) for word in words)
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in corpus.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        corpus = Counter({merge_pair(symbols, best): count for symbols, count in corpus.items()})


def merge_pair(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged: list[str] = []
    index = 0
    while index < len(symbols):
        if symbols[index : index + 2] == pair:
            merged.append(pair[0] + pair[1])
            index += 2
        else:
            merged.append(symbols[index])
            index += 1
    return tuple(merged)


def vocabulary(merges: list[tuple[str, str]], byte_map: dict[int, str]) -> dict[str, int]:
    symbols = list(byte_map.values())
    tokens = [*symbols, *(symbol + END_OF_WORD for symbol in symbols)]
    tokens += [left + right for left, right in merges]
    tokens += [START_TOKEN, END_TOKEN]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


def all_words() -> list[str]:
    return sorted(set(CAPTION_WORDS) | set(COMMON_WORDS))


@dataclass(frozen=True)
class TokenizerFiles:
    vocab: dict[str, int]
    merges: list[tuple[str, str]]


@cache
def learn() -> TokenizerFiles:
    """The vocabulary and merges (computed once per process)."""
    byte_map = bytes_to_unicode()
    merges = learn_merges(all_words(), byte_map)
    return TokenizerFiles(vocabulary(merges, byte_map), merges)


def clip_tokenizer() -> CLIPTokenizer:
    files = learn()
    merges: Any = list(files.merges)  # (left, right) pairs, as tokenizers' BPE takes them
    return CLIPTokenizer(vocab=dict(files.vocab), merges=merges, model_max_length=MAX_LENGTH)


def write_tokenizer(folder: Path) -> None:
    """Writes vocab.json, merges.txt and the config `CLIPTokenizer.from_pretrained` reads."""
    files = learn()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(files.vocab, ensure_ascii=False) + "\n")
    lines = ["#version: 0.2", *(f"{left} {right}" for left, right in files.merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": START_TOKEN,
        "eos_token": END_TOKEN,
        "unk_token": END_TOKEN,
        "pad_token": END_TOKEN,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n"
    )
