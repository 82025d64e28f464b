"""The public LM tokenizer: trained on public text, special tokens, exact round trips."""

from __future__ import annotations

import pytest

from dpalbum.models.text_encoder import resolve_path
from dpalbum.models.text_format import SpecialTokens, caption_row
from dpalbum.models.tokenizer import (
    TokenizerConfig,
    build_tokenizer,
    load_tokenizer,
    train_public_tokenizer,
    with_lm_special_tokens,
)

PUBLIC_TEXTS = [
    "a red circle in the beach with a ball",
    "a blue square in the city with a kite and a flag",
    "a holiday album of a red circle, in the beach and the city, with a ball",
] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return train_public_tokenizer(PUBLIC_TEXTS, TokenizerConfig(vocab_size=300))


def test_embedded_tokenizer_has_distinct_special_tokens(tokenizer):
    tokens = SpecialTokens.of(tokenizer)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (tokens.bos, tokens.eos, tokens.sep,
                                                        tokens.pad)]
    assert len(set(ids)) == 4
    assert tokenizer.pad_token_id == 0
    assert len(tokenizer) <= 300


def test_rows_round_trip_exactly_even_with_words_the_public_text_lacks(tokenizer):
    tokens = SpecialTokens.of(tokenizer)
    row = caption_row("an album of a zebra", "a zebra in the savanna", tokens)
    ids = tokenizer(row, add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids  # byte-level: nothing is unknown
    assert tokenizer.decode(ids) == row
    # Special tokens written in the text are single tokens, never split into characters.
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.sep_token_id in ids


def test_save_and_load_keep_the_same_ids(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(str(tmp_path))
    text = PUBLIC_TEXTS[2]
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert SpecialTokens.of(loaded) == SpecialTokens.of(tokenizer)


def test_public_vocabulary_merges_frequent_words(tokenizer):
    # A vocabulary learnt from the public text makes its frequent words single tokens.
    assert len(tokenizer(" circle", add_special_tokens=False)["input_ids"]) == 1


def test_pretrained_minilm_wordpiece_gets_a_separator_distinct_from_eos():
    tokenizer = build_tokenizer(TokenizerConfig(backend="pretrained",
                                                model_name_or_path=resolve_path("embedded")))
    tokens = SpecialTokens.of(tokenizer)
    assert (tokens.bos, tokens.eos, tokens.pad) == ("[CLS]", "[SEP]", "[PAD]")
    assert tokens.sep not in (tokens.eos, tokens.bos)
    assert tokenizer.convert_tokens_to_ids(tokens.sep) == len(tokenizer) - 1  # newly added


def test_existing_special_tokens_are_kept(tokenizer):
    before = len(tokenizer)
    assert with_lm_special_tokens(tokenizer) is tokenizer
    assert len(tokenizer) == before


def test_bad_configs_say_what_is_wrong():
    with pytest.raises(ValueError, match="no public text"):
        train_public_tokenizer(["", "  "])
    with pytest.raises(ValueError, match="model_name_or_path"):
        build_tokenizer(TokenizerConfig(backend="pretrained"))
    with pytest.raises(ValueError, match="unknown tokenizer backend"):
        build_tokenizer(TokenizerConfig(backend="gpt"), PUBLIC_TEXTS)
