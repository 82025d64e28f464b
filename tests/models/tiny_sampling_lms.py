"""Tiny word-level tokenizer and GPT-2 LMs for the sampling tests (no hub, CPU, a few seconds).

The trained pair lives in a toy world where a caption must copy its summary's colour: a caption LM
that really conditions on the summary gets the colour right far above chance (1 in 4).
"""

from __future__ import annotations

import contextlib
import functools
import itertools

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from dpalbum.models.text_format import SpecialTokens, caption_prompt, caption_row, summary_row

COLOURS = ("red", "blue", "yellow", "purple")
SHAPES = ("circle", "square")
EVENTS = ("holiday", "birthday")
SCENES = ("beach", "city", "night")
SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]")
WORDS = ("a", "with", "in", "the") + COLOURS + SHAPES + EVENTS + SCENES


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread: tiny models on a shared 2-core box slow down 10x+ with two."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the toy vocabulary with bos/eos/sep/pad/unk."""
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="[BOS]", eos_token="[EOS]", sep_token="[SEP]",
        pad_token="[PAD]", unk_token="[UNK]",
    )


def tiny_lm(tokenizer, seed: int = 0, n_positions: int = 48) -> GPT2LMHeadModel:
    """A randomly initialised 2-layer GPT-2 sized for the toy vocabulary."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).eval()


def toy_summary(event: str, colour: str, shape: str) -> str:
    return f"a {event} with a {colour} {shape}"


def toy_caption(colour: str, shape: str, scene: str) -> str:
    return f"a {colour} {shape} in the {scene}"


def _train(model, tokenizer, rows: list[str], prompt_lengths: list[int], steps: int, seed: int):
    ids = torch.tensor(tokenizer(rows, add_special_tokens=False)["input_ids"])  # (N, T)
    labels = ids.clone()
    for r, n in enumerate(prompt_lengths):
        labels[r, :n] = -100  # loss on the continuation only, as in DP training
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(rows), (32,), generator=generator)
        loss = model(input_ids=ids[batch], labels=labels[batch]).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@functools.lru_cache(maxsize=1)
def trained_toy_lms():
    """(summary_lm, caption_lm, tokenizer) trained on the toy world; cached per test session."""
    with single_thread():
        return _train_toy_lms()


def _train_toy_lms():
    tokenizer = tiny_tokenizer()
    tokens = SpecialTokens.of(tokenizer)
    summaries = [toy_summary(e, c, s) for e, c, s in itertools.product(EVENTS, COLOURS, SHAPES)]
    summary_lm = _train(tiny_lm(tokenizer, 1), tokenizer,
                        [summary_row(s, tokens) for s in summaries], [1] * len(summaries),
                        steps=60, seed=1)
    rows, prompt_lengths = [], []
    for e, c, s, scene in itertools.product(EVENTS, COLOURS, SHAPES, SCENES):
        summary = toy_summary(e, c, s)
        rows.append(caption_row(summary, toy_caption(c, s, scene), tokens))
        prompt_lengths.append(len(tokenizer(caption_prompt(summary, tokens),
                                            add_special_tokens=False)["input_ids"]))
    caption_lm = _train(tiny_lm(tokenizer, 2), tokenizer, rows, prompt_lengths, steps=300, seed=2)
    return summary_lm, caption_lm, tokenizer
