"""The public tokenizer of the embedded language models (summary LM and caption LM).

Privacy: a tokenizer is released with every model, so it must never see private text (DESIGN.md,
invariant 3). The ``embedded`` backend trains a small byte-level BPE on public text only (public
corpus captions and summaries of public pseudo-albums); the ``pretrained`` backend loads any
Hugging Face tokenizer by id or folder (e.g. MiniLM's WordPiece, which is public by construction).
Byte-level BPE never produces ``<unk>``: text with words the public corpus lacks still round-trips.
Both backends come back with the bos/eos/sep/pad tokens ``dpalbum.models.text_format`` needs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

# Ids follow this order in the embedded tokenizer: <|pad|> = 0, <|unk|> = 1, ...
EMBEDDED_SPECIAL_TOKENS: dict[str, str] = {
    "pad_token": "<|pad|>",
    "unk_token": "<|unk|>",
    "bos_token": "<|bos|>",
    "eos_token": "<|eos|>",
    "sep_token": "<|sep|>",
}


@dataclass
class TokenizerConfig:
    """Which public tokenizer the language models use."""

    backend: str = "embedded"  # "embedded" (BPE trained on public text) or "pretrained"
    model_name_or_path: str | None = None  # pretrained: a hub id or local folder
    vocab_size: int = 1024  # embedded: upper bound; a tiny public corpus stops merging earlier
    min_frequency: int = 2  # embedded: a merge must occur this often in the public text
    model_max_length: int = 64  # longest row (in tokens) the LMs are built for


def train_public_tokenizer(
    public_texts: Iterable[str], config: TokenizerConfig | None = None
) -> PreTrainedTokenizerBase:
    """Train a byte-level BPE on PUBLIC text only and wrap it as a Hugging Face fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    config = config or TokenizerConfig()
    texts = [t for t in public_texts if t and t.strip()]
    if not texts:
        raise ValueError("train_public_tokenizer got no public text: pass the public captions "
                         "(and public summaries) to learn a vocabulary from")
    bpe = Tokenizer(models.BPE(unk_token=EMBEDDED_SPECIAL_TOKENS["unk_token"]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=list(EMBEDDED_SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: no <unk> ever
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, model_max_length=config.model_max_length, **EMBEDDED_SPECIAL_TOKENS
    )
    logger.info("trained a public BPE tokenizer: %d tokens from %d public texts",
                len(tokenizer), len(texts))
    return tokenizer


def load_pretrained_tokenizer(
    model_name_or_path: str, model_max_length: int | None = None
) -> PreTrainedTokenizerBase:
    """Load a Hugging Face tokenizer (id or folder) with the special tokens dpalbum needs."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)
    if model_max_length is not None:
        tokenizer.model_max_length = model_max_length
    return with_lm_special_tokens(tokenizer)


def with_lm_special_tokens(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Fill in missing bos/eos/sep/pad tokens, reusing what the tokenizer already has.

    BERT-style vocabularies (MiniLM) have [CLS]/[SEP] but no bos/eos: [CLS] becomes bos and [SEP]
    eos. The separator between a summary and a caption must differ from eos (or the summary LM
    could not tell "summary ends" from "caption starts"), so a distinct ``<|sep|>`` is added when
    needed; ``len(tokenizer)`` then grows and the LM builder resizes its embeddings to match.
    """
    updates: dict[str, str] = {}
    if tokenizer.bos_token is None:
        updates["bos_token"] = tokenizer.cls_token or EMBEDDED_SPECIAL_TOKENS["bos_token"]
    eos = tokenizer.eos_token
    if eos is None:
        eos = tokenizer.sep_token or EMBEDDED_SPECIAL_TOKENS["eos_token"]
        updates["eos_token"] = eos
    if tokenizer.sep_token is None or tokenizer.sep_token == eos:
        updates["sep_token"] = EMBEDDED_SPECIAL_TOKENS["sep_token"]
    if tokenizer.pad_token is None:
        updates["pad_token"] = eos
    if updates:
        before = len(tokenizer)
        tokenizer.add_special_tokens(updates)
        logger.info("tokenizer %s: set %s (%d new tokens)", tokenizer.name_or_path,
                    ", ".join(f"{k}={v}" for k, v in sorted(updates.items())),
                    len(tokenizer) - before)
    return tokenizer


def build_tokenizer(
    config: TokenizerConfig, public_texts: Iterable[str] = ()
) -> PreTrainedTokenizerBase:
    """The LMs' tokenizer: trained on ``public_texts`` (embedded) or loaded (pretrained)."""
    if config.backend == "embedded":
        return train_public_tokenizer(public_texts, config)
    if config.backend == "pretrained":
        if not config.model_name_or_path:
            raise ValueError("tokenizer backend 'pretrained' needs model_name_or_path "
                             "(a hub id or a local folder)")
        return load_pretrained_tokenizer(config.model_name_or_path, config.model_max_length)
    raise ValueError(f"unknown tokenizer backend {config.backend!r}: use 'embedded' or "
                     "'pretrained'")


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer folder written with ``save_pretrained`` (either backend)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)
