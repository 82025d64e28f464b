"""Tiny GPT-2 LMs: building, row encoding with label masks, per-row losses, pre-training, LoRA."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dpalbum.models.language_model import (
    IGNORE_INDEX,
    LanguageModelConfig,
    PretrainConfig,
    build_language_model,
    caption_rows,
    encode_rows,
    make_lora,
    pretrain_lm,
    row_losses,
    summary_rows,
)
from dpalbum.models.text_format import SpecialTokens, caption_prompt, caption_row
from dpalbum.models.tokenizer import TokenizerConfig, train_public_tokenizer

SUMMARIES = ["a holiday album of a red circle, in the beach", "a hike album of a blue square"]
CAPTIONS = ["a red circle in the beach with a ball", "a blue square in the forest"]
TINY = LanguageModelConfig(n_layer=1, n_embd=32, n_head=2, n_positions=48, seed=3)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """2 shared cores: one intra-op thread is ~10x faster than two competing with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return train_public_tokenizer(SUMMARIES + CAPTIONS, TokenizerConfig(min_frequency=1))


@pytest.fixture(scope="module")
def album_texts():
    return pd.DataFrame({"album_id": ["a1", "a2"], "summary": SUMMARIES,
                         "captions": [CAPTIONS, CAPTIONS[1:]]})


def test_embedded_model_matches_the_tokenizer(tokenizer):
    model = build_language_model(TINY, tokenizer)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.n_positions == 48 and model.config.n_layer == 1
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert not model.config.tie_word_embeddings  # ghost clipping refuses tied weights


def test_rows_follow_text_format(tokenizer, album_texts):
    tokens = SpecialTokens.of(tokenizer)
    summaries = summary_rows(album_texts, tokenizer)
    assert summaries.texts[0] == f"{tokens.bos}{SUMMARIES[0]}{tokens.eos}"
    assert summaries.loss_start is None and summaries.album_ids == ["a1", "a2"]
    captions = caption_rows(album_texts, tokenizer)
    assert captions.album_ids == ["a1", "a1", "a2"]
    assert captions.texts[2] == caption_row(SUMMARIES[1], CAPTIONS[1], tokens)
    assert captions.loss_start[2] == len(caption_prompt(SUMMARIES[1], tokens))


def test_caption_rows_score_only_the_caption_and_never_padding(tokenizer, album_texts):
    rows = caption_rows(album_texts, tokenizer)
    batch = encode_rows(tokenizer, rows.texts, rows.loss_start, max_length=64)
    ids, labels = batch["input_ids"], batch["labels"]
    for i, text in enumerate(rows.texts):
        scored = ids[i][labels[i] != IGNORE_INDEX]
        caption = text[rows.loss_start[i]:]  # caption + eos
        assert tokenizer.decode(scored) == caption
    assert (labels[batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert torch.equal(batch["position_ids"][1], torch.arange(ids.shape[1]))


def test_summary_rows_score_every_real_token(tokenizer, album_texts):
    rows = summary_rows(album_texts, tokenizer)
    batch = encode_rows(tokenizer, rows.texts, None)
    real = batch["attention_mask"] == 1
    assert torch.equal(batch["labels"][real], batch["input_ids"][real])


def test_row_losses_are_per_row_means_unaffected_by_batch_neighbours(tokenizer, album_texts):
    model = build_language_model(TINY, tokenizer).eval()
    rows = caption_rows(album_texts, tokenizer)
    batch = encode_rows(tokenizer, rows.texts, rows.loss_start)
    summaries = summary_rows(album_texts, tokenizer).texts
    short = min(range(2), key=lambda i: len(summaries[i]))
    with torch.no_grad():
        losses = row_losses(model, batch)
        logits = model(input_ids=batch["input_ids"][:1]).logits[0, :-1]
        labels = batch["labels"][0, 1:]
        expected = F.cross_entropy(logits[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX])
        padded = row_losses(model, encode_rows(tokenizer, summaries))[short]
        alone = row_losses(model, encode_rows(tokenizer, summaries[short:short + 1]))[0]
    assert losses.shape == (3,)
    assert torch.allclose(losses[0], expected, atol=1e-5)
    assert torch.allclose(padded, alone, atol=1e-5)  # padding changes nothing


def test_pretraining_lowers_the_loss_and_is_seeded(tokenizer, album_texts):
    rows = caption_rows(album_texts, tokenizer)
    batch = encode_rows(tokenizer, rows.texts, rows.loss_start)
    models = []
    for seed in (1, 1, 2):
        config = PretrainConfig(epochs=10, batch_size=1, learning_rate=3e-3, max_length=48,
                                seed=seed)
        model = build_language_model(TINY, tokenizer)
        with torch.no_grad():
            before = row_losses(model.eval(), batch).mean()
        models.append(pretrain_lm(model, tokenizer, rows.texts, rows.loss_start, config))
    with torch.no_grad():
        after = row_losses(models[0], batch).mean()
    assert after < 0.5 * before
    same = [torch.equal(a, b) for a, b in zip(models[0].parameters(), models[1].parameters())]
    other = [torch.equal(a, b) for a, b in zip(models[0].parameters(), models[2].parameters())]
    assert all(same) and not all(other)  # the seed decides the order of the rows


def test_max_steps_stops_pretraining(tokenizer, album_texts):
    rows = summary_rows(album_texts, tokenizer)
    model = build_language_model(TINY, tokenizer)
    start = [p.clone() for p in model.parameters()]
    pretrain_lm(model, tokenizer, rows.texts, None, PretrainConfig(epochs=5, max_steps=0))
    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters()))


def test_lora_trains_only_adapters_and_starts_as_the_base_model(tokenizer, album_texts):
    model = build_language_model(TINY, tokenizer).eval()
    batch = encode_rows(tokenizer, summary_rows(album_texts, tokenizer).texts)
    with torch.no_grad():
        base = row_losses(model, batch)
    lora = make_lora(model, r=2, alpha=4)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(".c_attn." in n for n in trainable)
    with torch.no_grad():
        assert torch.allclose(row_losses(lora, batch), base, atol=1e-6)  # B = 0 at init
    row_losses(lora, batch).sum().backward()
    assert all(p.grad is not None for p in lora.parameters() if p.requires_grad)


def test_pretrained_backend_loads_a_folder_and_fits_a_larger_tokenizer(tokenizer, tmp_path):
    build_language_model(TINY, tokenizer).save_pretrained(tmp_path)
    tokenizer_plus = train_public_tokenizer(SUMMARIES + CAPTIONS,
                                            TokenizerConfig(min_frequency=1))
    tokenizer_plus.add_special_tokens({"additional_special_tokens": ["<|extra|>"]})
    config = LanguageModelConfig(backend="pretrained", model_name_or_path=str(tmp_path))
    model = build_language_model(config, tokenizer_plus)
    assert model.get_input_embeddings().num_embeddings == len(tokenizer_plus)
    with pytest.raises(ValueError, match="model_name_or_path"):
        build_language_model(LanguageModelConfig(backend="pretrained"), tokenizer)


def test_mismatched_loss_starts_are_refused(tokenizer):
    with pytest.raises(ValueError, match="loss_start"):
        encode_rows(tokenizer, ["a", "b"], [1])
