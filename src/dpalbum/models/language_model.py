"""The summary LM and the caption LM: a tiny GPT-2 built from config, or a pretrained causal LM.

Rows come from ``dpalbum.models.text_format`` so training and sampling agree on the format:
summary rows ``<bos> summary <eos>`` (loss on every token) and caption rows
``<bos> summary <sep> caption <eos>`` (loss on the caption part only, via labels = -100 on the
prompt). ``row_losses`` gives one mean token loss per row, the quantity the DP trainer clips and
sums per album; ``pretrain_lm`` is the short, non-private loop used on PUBLIC text only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dpalbum.models.text_format import SpecialTokens, caption_prompt, caption_row, summary_row

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of a token that carries no loss (prompt, padding)


@dataclass
class LanguageModelConfig:
    """A summary or caption LM: a tiny GPT-2 from config (embedded) or a hub id/folder."""

    backend: str = "embedded"  # "embedded" (GPT-2 from config) or "pretrained"
    model_name_or_path: str | None = None  # pretrained: any causal LM id or local folder
    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 64
    dropout: float = 0.0
    # Untied input/output embeddings: Opacus' ghost clipping refuses tied parameters.
    tie_word_embeddings: bool = False
    seed: int = 0


@dataclass
class PretrainConfig:
    """The non-private pre-training loop on public rows."""

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    max_length: int = 64
    max_steps: int | None = None  # stop early after this many optimiser steps
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"


@dataclass
class TextRows:
    """LM training rows of some albums: the text, where the loss starts, and the owning album."""

    texts: list[str]
    loss_start: list[int] | None  # character offset of the first scored character; None: all
    album_ids: list[str]


def build_language_model(
    config: LanguageModelConfig, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel:
    """A tiny GPT-2 sized to the tokenizer (embedded) or a pretrained causal LM (pretrained)."""
    if config.backend == "embedded":
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(config.seed)
        gpt_config = GPT2Config(
            vocab_size=len(tokenizer), n_positions=config.n_positions, n_embd=config.n_embd,
            n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=config.dropout,
            embd_pdrop=config.dropout, attn_pdrop=config.dropout,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=config.tie_word_embeddings,
        )
        model = GPT2LMHeadModel(gpt_config)
        logger.info("built a GPT-2 LM from config: %d layers x %d, %.2fM parameters",
                    config.n_layer, config.n_embd, model.num_parameters() / 1e6)
    elif config.backend == "pretrained":
        from transformers import AutoModelForCausalLM

        if not config.model_name_or_path:
            raise ValueError("language model backend 'pretrained' needs model_name_or_path")
        model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))  # special tokens the tokenizer added
    else:
        raise ValueError(f"unknown language model backend {config.backend!r}: use 'embedded' "
                         "or 'pretrained'")
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id = tokenizer.bos_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
    return model


def summary_rows(album_texts: pd.DataFrame, tokenizer: PreTrainedTokenizerBase) -> TextRows:
    """One summary-LM row per album (``album_texts``: album_id, summary, captions)."""
    tokens = SpecialTokens.of(tokenizer)
    return TextRows(
        texts=[summary_row(s, tokens) for s in album_texts["summary"]],
        loss_start=None,
        album_ids=[str(a) for a in album_texts["album_id"]],
    )


def caption_rows(album_texts: pd.DataFrame, tokenizer: PreTrainedTokenizerBase) -> TextRows:
    """One caption-LM row per (album summary, caption) pair, scored on the caption only."""
    tokens = SpecialTokens.of(tokenizer)
    texts, loss_start, album_ids = [], [], []
    for album_id, summary, captions in zip(
        album_texts["album_id"], album_texts["summary"], album_texts["captions"]
    ):
        prompt_chars = len(caption_prompt(summary, tokens))
        for caption in captions:
            texts.append(caption_row(summary, caption, tokens))
            loss_start.append(prompt_chars)
            album_ids.append(str(album_id))
    return TextRows(texts, loss_start, album_ids)


def encode_rows(
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[str],
    loss_start: Sequence[int] | None = None,
    max_length: int = 64,
) -> dict[str, torch.Tensor]:
    """Tokenise rows (right-padded) into input_ids, attention_mask, position_ids and labels.

    Rows already carry their special tokens (text_format), so the tokenizer adds none. Labels
    are -100 on padding and, where ``loss_start`` is given, on every token that starts before
    that character offset (the caption LM's prompt).
    """
    if loss_start is not None and len(loss_start) != len(rows):
        raise ValueError(f"loss_start has {len(loss_start)} entries for {len(rows)} rows")
    enc = tokenizer(list(rows), add_special_tokens=False, padding=True, truncation=True,
                    max_length=max_length, return_offsets_mapping=loss_start is not None,
                    return_tensors="pt")
    input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]  # (B, T)
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    if loss_start is not None:
        starts = torch.as_tensor(list(loss_start)).unsqueeze(1)  # (B, 1)
        labels = labels.masked_fill(enc["offset_mapping"][..., 0] < starts, IGNORE_INDEX)
    batch, length = input_ids.shape
    # Explicit positions (a fresh tensor per row, not .expand): Opacus' per-sample hooks need it.
    position_ids = torch.arange(length).repeat(batch, 1)  # (B, T)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "position_ids": position_ids, "labels": labels}


class RowCollate:
    """``collate`` for DP-SGD over ``(text, loss_start)`` rows: ``encode_rows`` on a batch.

    A class, not a closure, so that it pickles for multi-process (torchrun) training.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int = 64) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, rows: Sequence[tuple[str, int | None]]) -> dict[str, torch.Tensor]:
        starts = [s for _, s in rows]
        return encode_rows(self.tokenizer, [t for t, _ in rows],
                           None if starts[0] is None else starts, self.max_length)


def row_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy of each row over its scored tokens, shape (B,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits  # (B, T, V)
    targets = batch["labels"][:, 1:]  # (B, T-1): token t+1 is predicted at position t
    token_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), targets,
                                 ignore_index=IGNORE_INDEX, reduction="none")  # (B, T-1)
    n_scored = (targets != IGNORE_INDEX).sum(dim=1)  # (B,)
    return token_loss.sum(dim=1) / n_scored.clamp(min=1)


def pretrain_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[str],
    loss_start: Sequence[int] | None,
    config: PretrainConfig,
) -> PreTrainedModel:
    """Non-private pre-training on PUBLIC rows (AdamW, shuffled mini-batches, seeded)."""
    if not rows:
        raise ValueError("pretrain_lm got no rows: pass public summary or caption rows")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model.to(config.device).train()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(rows) / config.batch_size)
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    progress = tqdm(total=total, desc="pre-training LM on public text", unit="step")
    step, last_loss = 0, float("nan")
    while step < total:  # epochs: a fresh shuffle each pass over the rows
        order = torch.randperm(len(rows), generator=generator).tolist()
        for start in range(0, len(rows), config.batch_size):
            if step >= total:
                break
            idx = order[start:start + config.batch_size]
            batch = encode_rows(tokenizer, [rows[i] for i in idx],
                                None if loss_start is None else [loss_start[i] for i in idx],
                                config.max_length)
            batch = {k: v.to(config.device) for k, v in batch.items()}
            loss = row_losses(model, batch).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimiser.step()
            step += 1
            last_loss = loss.item()
            progress.update(1)
            progress.set_postfix(loss=f"{last_loss:.3f}")
    progress.close()
    logger.info("pre-trained LM for %d steps on %d public rows, last loss %.3f",
                step, len(rows), last_loss)
    return model.eval()


def make_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: int = 16,
    target_modules: Sequence[str] = ("c_attn",),
    fan_in_fan_out: bool = True,
    dropout: float = 0.0,
):
    """Wrap the LM with LoRA adapters (peft); only the adapters stay trainable.

    GPT-2's attention projections are ``Conv1D`` (weights stored transposed), hence
    ``fan_in_fan_out=True``. Move the model to its device *before* calling this and before
    ``make_private``: moving afterwards detaches Opacus' hooks and freezes the LoRA weights
    (opacus #820).
    """
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(target_modules),
                      fan_in_fan_out=fan_in_fan_out, lora_dropout=dropout, bias="none",
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def role_rows(role: str, album_texts: pd.DataFrame, tokenizer: PreTrainedTokenizerBase) -> TextRows:
    """The training rows of an LM role: one per album (summary_lm) or per caption (caption_lm)."""
    return (summary_rows if role == "summary_lm" else caption_rows)(album_texts, tokenizer)


def rows_by_album(role: str, album_texts: pd.DataFrame,
                  tokenizer: PreTrainedTokenizerBase) -> list[list[tuple[str, int | None]]]:
    """The role's rows grouped by album, in ``album_texts`` order: ``(text, loss_start)`` each."""
    rows = role_rows(role, album_texts, tokenizer)
    by_album: dict[str, list[tuple[str, int | None]]] = {}
    for i, (text, album) in enumerate(zip(rows.texts, rows.album_ids)):
        by_album.setdefault(album, []).append(
            (text, None if rows.loss_start is None else rows.loss_start[i]))
    return [by_album.get(str(a), []) for a in album_texts["album_id"]]


def build_and_pretrain(role: str, public_album_texts: pd.DataFrame,
                       tokenizer: PreTrainedTokenizerBase, role_params: dict, seed: int,
                       device: str) -> torch.nn.Module:
    """Build the role's LM (``role_params["model"]``) and pre-train it on PUBLIC pseudo-album
    rows (``role_params["pretrain"]``); no public rows: the model stays as initialised."""
    model = build_language_model(LanguageModelConfig(seed=seed, **role_params["model"]),
                                 tokenizer)
    if len(public_album_texts) == 0:
        logger.warning("%s: no public pre-training data (selection: none); DP fine-tuning "
                       "starts from random weights", role)
        return model
    rows = role_rows(role, public_album_texts, tokenizer)
    config = PretrainConfig(seed=seed, device=device, **role_params["pretrain"])
    return pretrain_lm(model, tokenizer, rows.texts, rows.loss_start, config)
