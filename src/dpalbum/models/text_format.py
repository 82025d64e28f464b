"""How album texts become language-model rows, shared by training and sampling.

The summary LM models ``<bos> summary <eos>``; the caption LM models one caption conditioned on
its album's summary: ``<bos> summary <sep> caption <eos>`` with the loss on the caption part only.
Special tokens come from the (public) tokenizer, so the same code serves the embedded tokenizer and
a pretrained one (which must define bos/eos/sep/pad tokens, or get them added before training).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialTokens:
    """The text of the four special tokens a dpalbum LM tokenizer must define."""

    bos: str
    eos: str
    sep: str
    pad: str

    @classmethod
    def of(cls, tokenizer) -> SpecialTokens:
        """Read the special tokens of a Hugging Face tokenizer (error names what is missing)."""
        missing = [n for n in ("bos_token", "eos_token", "sep_token", "pad_token")
                   if getattr(tokenizer, n, None) is None]
        if missing:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} lacks {', '.join(missing)}: add them with "
                "tokenizer.add_special_tokens({...}) and resize the model's embeddings"
            )
        return cls(tokenizer.bos_token, tokenizer.eos_token, tokenizer.sep_token,
                   tokenizer.pad_token)


def summary_row(summary: str, tokens: SpecialTokens) -> str:
    """The summary LM's training text for one album."""
    return f"{tokens.bos}{summary.strip()}{tokens.eos}"


def caption_prompt(summary: str, tokens: SpecialTokens) -> str:
    """The caption LM's prompt: the album summary the caption must fit."""
    return f"{tokens.bos}{summary.strip()}{tokens.sep}"


def caption_row(summary: str, caption: str, tokens: SpecialTokens) -> str:
    """The caption LM's training text for one (summary, caption) pair of an album."""
    return f"{caption_prompt(summary, tokens)}{caption.strip()}{tokens.eos}"
