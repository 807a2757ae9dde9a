"""The offline CLIP tokenizer: whole words, round trips, the same bytes every build."""

from pathlib import Path

from transformers import CLIPTokenizer

from hack.models.tokenizer import (
    CAPTION_WORDS,
    COMMON_WORDS,
    END_TOKEN,
    MAX_LENGTH,
    START_TOKEN,
    write_tokenizer,
)


def load(folder: Path) -> CLIPTokenizer:
    write_tokenizer(folder)
    tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(folder)
    return tokenizer


def test_every_caption_word_is_one_token_and_round_trips(tmp_path: Path) -> None:
    tokenizer = load(tmp_path)
    for word in (*CAPTION_WORDS, *COMMON_WORDS):
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, f"{word!r} is {tokenizer.convert_ids_to_tokens(ids)}"
        assert tokenizer.decode(ids) == word


def test_captions_round_trip_with_clip_framing(tmp_path: Path) -> None:
    tokenizer = load(tmp_path)
    encoded = tokenizer("A Red  Circle", padding="max_length", max_length=MAX_LENGTH)
    tokens = tokenizer.convert_ids_to_tokens(encoded.input_ids)
    assert tokens[:5] == [START_TOKEN, "a</w>", "red</w>", "circle</w>", END_TOKEN]
    assert len(tokens) == MAX_LENGTH
    assert set(tokens[5:]) == {END_TOKEN}
    assert tokenizer.decode(encoded.input_ids, skip_special_tokens=True) == "a red circle"


def test_unknown_words_fall_back_to_bytes(tmp_path: Path) -> None:
    tokenizer = load(tmp_path)
    text = "zebra quux"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) > 2
    assert tokenizer.decode(ids) == text


def test_files_are_the_same_bytes_every_build(tmp_path: Path) -> None:
    write_tokenizer(tmp_path / "first")
    write_tokenizer(tmp_path / "second")
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
