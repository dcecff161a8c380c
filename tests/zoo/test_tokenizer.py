"""The shipped tokenizer is a real CLIP BPE tokenizer with one token per caption word."""

from __future__ import annotations

from pathlib import Path

import pytest

import autoq.zoo
from autoq.zoo import _shapes, _tokenizer


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(autoq.zoo.model_path("shapes") / "pipeline" / "tokenizer")


def test_tokenizer_folder_has_bpe_files() -> None:
    folder = autoq.zoo.model_path("shapes") / "pipeline" / "tokenizer"
    assert (folder / "vocab.json").is_file()
    assert (folder / "merges.txt").is_file()


def test_captions_tokenize_to_whole_words_and_round_trip(tokenizer) -> None:  # type: ignore[no-untyped-def]
    for index in range(50):
        caption = _shapes.sample(0, index)[1].caption
        ids = tokenizer(caption).input_ids
        tokens = tokenizer.convert_ids_to_tokens(ids)
        assert tokens[0] == _tokenizer.BOS and tokens[-1] == _tokenizer.EOS
        assert tokens[1:-1] == [f"{word}</w>" for word in caption.split()]
        assert tokenizer.decode(ids, skip_special_tokens=True) == caption


def test_padding_uses_end_of_text(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = tokenizer("a red star", padding="max_length").input_ids
    assert len(ids) == tokenizer.model_max_length == _tokenizer.MAX_LENGTH
    assert ids[-1] == tokenizer.eos_token_id == tokenizer.pad_token_id


def test_rebuilt_tokenizer_matches_shipped_one(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    rebuilt = _tokenizer.build_tokenizer(_shapes.caption_vocabulary(), tmp_path)
    assert rebuilt.get_vocab() == tokenizer.get_vocab()


def test_learn_bpe_merges_each_word_into_one_symbol() -> None:
    symbols, merges = _tokenizer.learn_bpe(["red", "green", "reed"])
    assert {"red</w>", "green</w>", "reed</w>"} <= set(symbols)
    assert all(a + b in symbols for a, b in merges)
