"""A word-level `CLIPTokenizer` for the caption vocabulary, written as vocab.json + merges.txt.

The merges are learned by plain byte-pair encoding over the vocabulary until every word is a
single ``word</w>`` token, so the files are an ordinary CLIP BPE tokenizer that happens to
have one token per caption word.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

__all__ = ["BOS", "EOS", "MAX_LENGTH", "build_tokenizer", "learn_bpe"]

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MAX_LENGTH = 16  # longest caption is 11 words, plus the two special tokens


def learn_bpe(words: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Learn BPE merges that turn each word into one ``word</w>`` symbol.

    Args:
        words: Distinct lower-case words.

    Returns:
        The symbol inventory (characters first, then merge results in order) and the merges.
    """
    corpus = {w: [*w[:-1], w[-1] + "</w>"] for w in words}
    symbols = sorted({s for parts in corpus.values() for s in parts})
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter[tuple[str, str]] = Counter()
        for parts in corpus.values():
            pairs.update(pairwise(parts))
        if not pairs:
            return symbols, merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        symbols.append(best[0] + best[1])
        for word, parts in corpus.items():
            merged, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            corpus[word] = merged


def build_tokenizer(words: list[str], folder: str | Path) -> CLIPTokenizer:
    """Write vocab.json and merges.txt for ``words`` into ``folder`` and load them.

    Args:
        words: The caption vocabulary.
        folder: Where the tokenizer files go (created if missing).

    Returns:
        The tokenizer, loaded back with ``CLIPTokenizer.from_pretrained(folder)``.
    """
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    symbols, merges = learn_bpe(sorted(set(words)))
    vocab = {symbol: i for i, symbol in enumerate(dict.fromkeys(symbols))}
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)  # last id, as in OpenAI CLIP, so argmax pooling also finds it
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=1, ensure_ascii=False) + "\n")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n")
    tokenizer = CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        model_max_length=MAX_LENGTH,
    )
    tokenizer.save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder)
