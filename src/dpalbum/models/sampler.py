"""Hierarchical sampling of synthetic album texts: summaries first, then captions given a summary.

Model-agnostic: any Hugging Face causal LM with ``.generate`` plus a tokenizer that defines the
bos/eos/sep/pad tokens of ``dpalbum.models.text_format`` (the formats the LMs were trained on):

1. the summary LM continues ``<bos>`` once per album (one batched ``generate`` per
   ``batch_size`` albums, KV cache on);
2. the caption LM continues ``caption_prompt(summary)`` once per (album, caption slot); all slots
   of all albums are pooled, sorted by prompt length and cut into left-padded batches, so the
   number of ``generate`` calls is ``ceil(n_captions / batch_size)``, not one per caption.

Privacy. Sampling reads only the (DP-trained) models and parameters: it is post-processing and
spends no ε. The number of captions per album is drawn from a PUBLIC prior in parameters
(``photos_per_album``), not from the private album sizes, which are never read here; a DP size
histogram could replace the prior later, if it is charged to the privacy ledger first.

Reproducibility. Every random number is tied to one text, never to a batch: album ``i`` gets the
seed ``album_seed(seed, i)``; its size, its summary and its caption ``j`` each draw from their own
stream derived from that seed (``numpy.random.SeedSequence``). Sampling uses those streams through
inverse-CDF draws inside a logits processor, and ``generate`` then decodes greedily, so HF's own
RNG is never consumed. Guarantee: the same seed, models, tokenizer, parameters, torch build and
device give byte-identical text. Changing ``batch_size`` or ``n_albums`` (album ``i`` is the same
in a run of 10 or of 1000 albums) changes no random number a text sees; it only changes which rows
share a padded batch, which can alter logits by floating-point rounding and so, rarely, flip a
token that sits on a sampling boundary. On CPU the tests observe exact equality across batch sizes.

Processes. With ``nproc`` > 1 (torchrun workers, see ``dpalbum.distributed``) every rank computes
the same global batch plan (:func:`plan_text_batches`: prompts sorted by length, cut into
``batch_size`` rows) and rank r runs batches r, r + W, ...; the summaries are all-gathered before
the caption plan is made, then the captions the same way. A row therefore sits in exactly the
batch it sits in on one process, and the output is bit-for-bit the single-process output, at equal
device, precision and torch threads per process.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from dpalbum.distributed import Shard, all_gather, current_shard
from dpalbum.models.devices import (
    DEVICES,
    PRECISIONS,
    generation_autocast,
    generation_device,
)
from dpalbum.models.text_format import SpecialTokens, caption_prompt
from dpalbum.params import params

logger = logging.getLogger(__name__)

# Tags that separate the random streams of one album (part of the seed derivation: never reorder).
_SAMPLING, _SIZE, _SUMMARY, _CAPTION = 0x5A4D, 1, 2, 3


@params
class AlbumSizePrior:
    """PUBLIC prior on the number of photos (captions) per synthetic album.

    ``uniform``: every size in [min, max] equally likely. ``categorical``: ``probs`` maps a size to
    its probability (normalised here). Chosen by the user from public knowledge, never fitted to
    the private albums.
    """

    distribution: str = "uniform"
    min: int = 4
    max: int = 8
    probs: dict[int, float] | None = None

    def __post_init__(self) -> None:
        if self.distribution == "uniform":
            if not 1 <= self.min <= self.max:
                raise ValueError(f"photos_per_album: need 1 <= min <= max, got min={self.min}, "
                                 f"max={self.max}")
        elif self.distribution == "categorical":
            if not self.probs:
                raise ValueError("photos_per_album: distribution 'categorical' needs probs, "
                                 "e.g. {4: 0.2, 5: 0.3, 6: 0.5}")
            self.probs = {int(k): float(v) for k, v in self.probs.items()}
            if min(self.probs) < 1 or min(self.probs.values()) < 0 or sum(self.probs.values()) <= 0:
                raise ValueError(f"photos_per_album.probs must map sizes >= 1 to non-negative "
                                 f"weights with a positive sum, got {self.probs}")
        else:
            raise ValueError(f"photos_per_album.distribution must be 'uniform' or 'categorical', "
                             f"got {self.distribution!r}")

    def sample(self, rng: np.random.Generator) -> int:
        """One album size from the prior."""
        if self.distribution == "uniform":
            return int(rng.integers(self.min, self.max + 1))
        sizes = sorted(self.probs)
        weights = np.array([self.probs[s] for s in sizes], dtype=np.float64)
        return int(rng.choice(sizes, p=weights / weights.sum()))

    def describe(self) -> str:
        if self.distribution == "uniform":
            return f"uniform over {self.min}..{self.max}"
        return f"categorical {dict(sorted(self.probs.items()))}"


@params
class MaxNewTokens:
    """Generation length caps per model role (in tokens, eos included)."""

    summary: int = 30
    caption: int = 30


@params
class SamplingConfig:
    """Hierarchical sampling parameters (``parameters_sampling.yml``, key ``sampling``)."""

    n_albums: int = 200
    seed: int = 0
    photos_per_album: AlbumSizePrior = field(default_factory=AlbumSizePrior)
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus sampling; 1 = off
    top_k: int = 0  # 0 = off
    max_new_tokens: MaxNewTokens = field(default_factory=MaxNewTokens)
    batch_size: int = 64  # prompts per generate call (both roles)
    show_progress: bool = True
    nproc: int = 1  # processes (torchrun workers); 1 = in this process
    device: str = "auto"  # auto: CUDA when present (a worker's own GPU), else CPU; or cpu/cuda
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA only; ignored on CPU)

    def __post_init__(self) -> None:
        if isinstance(self.photos_per_album, dict):
            self.photos_per_album = AlbumSizePrior(**self.photos_per_album)
        if isinstance(self.max_new_tokens, dict):
            self.max_new_tokens = MaxNewTokens(**self.max_new_tokens)
        problems = [msg for bad, msg in [
            (self.n_albums < 0, f"n_albums must be >= 0, got {self.n_albums}"),
            (self.temperature < 0, f"temperature must be >= 0, got {self.temperature}"),
            (not 0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (self.top_k < 0, f"top_k must be >= 0, got {self.top_k}"),
            (self.batch_size < 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (min(self.max_new_tokens.summary, self.max_new_tokens.caption) < 1,
             f"max_new_tokens must be >= 1, got {self.max_new_tokens}"),
            (self.nproc < 1, f"nproc must be >= 1, got {self.nproc}"),
            (self.device not in DEVICES and not self.device.startswith("cuda:"),
             f"device must be one of {DEVICES} or cuda:N, got {self.device!r}"),
            (self.precision not in PRECISIONS,
             f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
        ] if bad]
        if problems:
            raise ValueError("sampling parameters: " + "; ".join(problems))

    @classmethod
    def from_params(cls, params: SamplingConfig | dict[str, Any]) -> SamplingConfig:
        """Accept the validated object Kedro passes or a raw ``params:sampling`` dict."""
        return params if isinstance(params, cls) else cls(**params)


@dataclass
class SyntheticAlbumText:
    """One sampled album: its id, summary, captions (photo order) and the seed it came from."""

    album_id: str
    summary: str
    captions: list[str]
    seed: int


# ---- seeds ----------------------------------------------------------------------------------

def album_seed(seed: int, index: int) -> int:
    """The seed of album ``index`` (0-based) in a run seeded ``seed``: a 32-bit integer."""
    state = np.random.SeedSequence([_SAMPLING, int(seed), int(index)]).generate_state(1)
    return int(state[0])


def _stream(seed: int, tag: int, slot: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag, slot]))


def text_seed(seed_of_album: int, role: str, slot: int = 0) -> int:
    """The seed of one text of an album: its summary (``role='summary'``) or caption ``slot``."""
    tag = {"summary": _SUMMARY, "caption": _CAPTION}[role]
    return int(np.random.SeedSequence([int(seed_of_album), tag, slot]).generate_state(1)[0])


# ---- batched, per-row-seeded generation ---------------------------------------------------

class SeededSampling(LogitsProcessor):
    """Sample the next token of each row from its own pre-drawn uniforms (inverse CDF).

    ``uniforms[r, t]`` is the random number row ``r`` uses at generation step ``t``; it depends
    only on that row's seed, so a row's text does not depend on its batch neighbours. The processor
    returns scores that are ``-inf`` everywhere but the drawn token, so greedy decoding (and any
    warper HF might still apply) selects exactly that token. Never drawn: ``banned_ids`` (special
    tokens other than eos: pad, bos, sep, ...; they have no place inside a text) and ids from
    ``n_token_ids`` on (embedding rows a model may have beyond its tokenizer's vocabulary).
    """

    def __init__(self, uniforms: torch.Tensor, prompt_length: int, temperature: float,
                 top_p: float = 1.0, top_k: int = 0, banned_ids: Sequence[int] = (),
                 n_token_ids: int | None = None) -> None:
        self.uniforms = uniforms  # (B, max_new_tokens) float64 in [0, 1)
        self.prompt_length = prompt_length
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.banned_ids = sorted(set(banned_ids))
        self.n_token_ids = n_token_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        # The draw itself is never autocast (bf16 generation): a bf16 cdf would move tokens
        # across sampling boundaries far more often than the model's own rounding does.
        if scores.device.type == "cuda":
            with torch.autocast(device_type="cuda", enabled=False):
                return self._choose(input_ids, scores)
        return self._choose(input_ids, scores)

    def _choose(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_length
        logits = scores.float().clone()  # (B, V)
        vocab = logits.shape[-1]
        logits[:, [i for i in self.banned_ids if i < vocab]] = float("-inf")
        if self.n_token_ids is not None and self.n_token_ids < vocab:
            logits[:, self.n_token_ids:] = float("-inf")
        if self.temperature == 0:
            chosen = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        else:
            chosen = self._draw(logits / self.temperature, self.uniforms[:, step])
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen, 0.0)

    def _draw(self, logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        vocab = logits.shape[-1]
        if 0 < self.top_k < vocab:
            kth = torch.topk(logits, self.top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        work = torch.float32 if logits.device.type == "mps" else torch.float64
        probs = torch.softmax(logits.to(work), dim=-1)  # (B, V)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
            # drop a token when the mass before it already reaches top_p (the top token stays)
            drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= self.top_p
            drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
            probs = probs.masked_fill(drop, 0.0)
        cdf = probs.cumsum(dim=-1)  # (B, V), unnormalised after top-p
        target = (u.to(work) * cdf[:, -1]).unsqueeze(1)  # (B, 1)
        chosen = torch.searchsorted(cdf, target, right=True).clamp_(max=vocab - 1)
        # rounding can land on a zero-probability token at the very end of the cdf: take the mode
        bad = probs.gather(1, chosen) <= 0
        return torch.where(bad, probs.argmax(dim=-1, keepdim=True), chosen)


@contextlib.contextmanager
def _plain_generation_config(model) -> Iterator[None]:
    """Hide the model's own generation defaults (repetition penalty, forced tokens, ...).

    ``generate`` fills unset values from ``model.generation_config``; a trained model may carry
    processors that would change what our sampler sees. Swapped back afterwards.
    """
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = getattr(target, "generation_config", None)
    target.generation_config = GenerationConfig()
    try:
        yield
    finally:
        target.generation_config = saved


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _context_limit(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def decode_generated(tokenizer, ids: list[int], eos_id: int) -> tuple[str, bool]:
    """Text of the generated ids up to the first eos, special tokens removed; (text, ended)."""
    ended = eos_id in ids
    if ended:
        ids = ids[: ids.index(eos_id)]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return " ".join(text.split()), ended


@dataclass
class GeneratedTexts:
    """What ``generate_texts`` returns: one text per prompt, plus counts for logs and benchmarks."""

    texts: list[str]
    new_tokens: int  # tokens generated before (and including) each text's eos
    cut_at_max_new_tokens: int  # texts that reached max_new_tokens without an eos


def plan_text_batches(prompt_lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The global batch plan: prompt indices sorted by length (less padding), ``batch_size`` a
    batch. A pure function of the lengths, so every process computes the same plan."""
    order = sorted(range(len(prompt_lengths)), key=lambda i: prompt_lengths[i])  # stable
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def generate_texts(
    model, tokenizer, prompts: Sequence[str], seeds: Sequence[int], *, max_new_tokens: int,
    temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, batch_size: int = 64,
    desc: str = "generate", show_progress: bool = True, precision: str = "fp32",
    shard: Shard | None = None,
) -> GeneratedTexts:
    """Continue every prompt once, in left-padded batches of ``batch_size`` prompts.

    Prompts are text in the LM's training format (special tokens written out, so they are
    tokenized with ``add_special_tokens=False``). Row ``i`` samples with ``seeds[i]`` only.
    ``shard``: inside a torchrun process group (:func:`dpalbum.distributed.current_shard`), this
    rank runs batches rank, rank + W, ... of the global plan and the rows are all-gathered, so
    every rank returns all texts. A collective: every rank must call it with the same prompts.
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"generate_texts: {len(prompts)} prompts but {len(seeds)} seeds")
    shard = shard or Shard()
    if shard.world > 1 and shard != current_shard():
        raise ValueError(f"generate_texts: shard {shard} is not this process' place in the "
                         f"process group ({current_shard()}): run it under torchrun "
                         "(dpalbum.distributed.run_torchrun)")
    SpecialTokens.of(tokenizer)  # fail early, naming what a tokenizer lacks
    if not prompts:
        return GeneratedTexts([], 0, 0)
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    encoded = _fit_to_context(encoded, _context_limit(model), max_new_tokens,
                              warn=shard.is_main)
    batches = shard.take(plan_text_batches([len(ids) for ids in encoded], batch_size))
    rows = _generate_batches(model, tokenizer, encoded, seeds, batches, max_new_tokens,
                             temperature, top_p, top_k, precision,
                             desc=desc, show_progress=show_progress and shard.is_main)
    if shard.world > 1:
        rows = {i: row for part in all_gather(rows) for i, row in part.items()}
    result = GeneratedTexts([""] * len(encoded), 0, 0)
    for i, (text, new_tokens, ended) in rows.items():
        result.texts[i] = text
        result.new_tokens += new_tokens
        result.cut_at_max_new_tokens += not ended
    return result


def _generate_batches(
    model, tokenizer, encoded: list[list[int]], seeds: Sequence[int], batches: list[list[int]],
    max_new_tokens: int, temperature: float, top_p: float, top_k: int, precision: str, *,
    desc: str, show_progress: bool,
) -> dict[int, tuple[str, int, bool]]:
    """Run ``batches`` (lists of row indices); row index -> (text, new tokens, ended at eos)."""
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    device = _device(model)
    banned = [i for i in tokenizer.all_special_ids if i != eos_id]
    done: dict[int, tuple[str, int, bool]] = {}
    # Finished rows are fed eos (not pad) until the batch ends: their text is cut at the first eos
    # anyway, and HF's "padding without attention mask" check then stays quiet.
    generation_config = GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos_id,
        pad_token_id=eos_id, use_cache=True,
    )
    model.eval()
    with (_plain_generation_config(model), torch.inference_mode(),
          generation_autocast(precision, device)):
        for rows in tqdm(batches, desc=desc, unit="batch", disable=not show_progress):
            width = max(len(encoded[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
            attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
            for r, i in enumerate(rows):  # left padding: every prompt ends at column T - 1
                input_ids[r, width - len(encoded[i]):] = torch.tensor(encoded[i])
                attention_mask[r, width - len(encoded[i]):] = 1
            uniforms = torch.from_numpy(np.stack(
                [np.random.default_rng(seeds[i]).random(max_new_tokens) for i in rows]))
            sampler = SeededSampling(uniforms.to(device), width, temperature, top_p, top_k,
                                     banned, n_token_ids=len(tokenizer))
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                generation_config=generation_config,
                logits_processor=LogitsProcessorList([sampler]),
            )  # (B, T + new)
            for r, i in enumerate(rows):
                new = out[r, width:].tolist()
                text, ended = decode_generated(tokenizer, new, eos_id)
                done[i] = (text, new.index(eos_id) + 1 if ended else len(new), ended)
    return done


def _fit_to_context(encoded: list[list[int]], limit: int | None, max_new_tokens: int,
                    warn: bool = True):
    """Shorten prompts that would overflow the model's context, keeping their first and last token.

    The last token is the separator the caption LM continues from; the dropped tokens are the end
    of an over-long summary. Logged, since it means max_new_tokens is set too large for the model.
    """
    if limit is None:
        return encoded
    budget = limit - max_new_tokens
    if budget < 2:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the "
                         f"model's context of {limit} tokens: lower sampling.max_new_tokens")
    fitted = [ids if len(ids) <= budget else ids[: budget - 1] + ids[-1:] for ids in encoded]
    shortened = sum(len(a) != len(b) for a, b in zip(encoded, fitted))
    if shortened and warn:
        logger.warning("%d prompts shortened to %d tokens to fit the model's context of %d",
                       shortened, budget, limit)
    return fitted


# ---- the hierarchical sampler ------------------------------------------------------------------

def sample_album_texts(
    summary_lm, caption_lm, tokenizer, config: SamplingConfig, shard: Shard | None = None,
) -> tuple[list[SyntheticAlbumText], dict[str, Any]]:
    """Sample ``config.n_albums`` albums: summaries first, then captions conditioned on each.

    Returns the albums (ids ``synthetic_00001``, ...) and run metadata: parameters, where album
    sizes came from (the public prior) and counts, including texts cut at ``max_new_tokens``.
    Runs on the models' device. ``shard``: this rank inside a torchrun process group (see
    :func:`sample_album_texts_on_rank`); every rank then returns the whole result.
    """
    tokens = SpecialTokens.of(tokenizer)
    shard = shard or Shard()
    n = config.n_albums
    seeds = [album_seed(config.seed, i) for i in range(n)]
    sizes = [config.photos_per_album.sample(_stream(s, _SIZE)) for s in seeds]
    decoding = dict(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k,
                    batch_size=config.batch_size, show_progress=config.show_progress,
                    precision=config.precision, shard=shard)
    started = time.perf_counter()
    summaries = generate_texts(
        summary_lm, tokenizer, [tokens.bos] * n, [text_seed(s, "summary") for s in seeds],
        max_new_tokens=config.max_new_tokens.summary, desc="summaries", **decoding)
    owners = [i for i in range(n) for _ in range(sizes[i])]
    slots = [j for i in range(n) for j in range(sizes[i])]
    captions = generate_texts(
        caption_lm, tokenizer, [caption_prompt(summaries.texts[i], tokens) for i in owners],
        [text_seed(seeds[i], "caption", j) for i, j in zip(owners, slots)],
        max_new_tokens=config.max_new_tokens.caption, desc="captions", **decoding)
    seconds = time.perf_counter() - started
    per_album: list[list[str]] = [[] for _ in range(n)]
    for i, caption in zip(owners, captions.texts):
        per_album[i].append(caption)
    albums = [SyntheticAlbumText(f"synthetic_{i + 1:05d}", summaries.texts[i], per_album[i],
                                 seeds[i]) for i in range(n)]
    # no wall-clock time in the metadata (it lands in the parquet): equal inputs must give equal
    # bytes, or DVC would call every downstream stage stale after a re-run; the log has it
    metadata = sampling_metadata(config) | {
        "n_albums": n, "n_captions": len(owners),
        "processes": shard.world, "device": str(_device(summary_lm)),
        "generated_tokens": summaries.new_tokens + captions.new_tokens,
        "summaries_cut_at_max_new_tokens": summaries.cut_at_max_new_tokens,
        "captions_cut_at_max_new_tokens": captions.cut_at_max_new_tokens,
    }
    if shard.is_main:
        logger.info("sampled %d albums and %d captions in %.1f s (%.1f captions/s) on %d "
                    "process(es); album sizes from the public prior %s; %d summaries and %d "
                    "captions hit max_new_tokens", n, len(owners), seconds,
                    len(owners) / max(seconds, 1e-9), shard.world,
                    config.photos_per_album.describe(), summaries.cut_at_max_new_tokens,
                    captions.cut_at_max_new_tokens)
    return albums, metadata


def sample_album_texts_on_rank(
    job: tuple[Any, Any, Any, SamplingConfig],
) -> tuple[list[SyntheticAlbumText], dict[str, Any]] | None:
    """One torchrun worker of sharded sampling (target of ``run_torchrun``).

    ``job``: (summary_lm, caption_lm, tokenizer, config). The models go to this worker's device
    (:func:`dpalbum.models.devices.generation_device`); rank 0 returns the albums and metadata,
    the other ranks None (the result would only travel back once more).
    """
    summary_lm, caption_lm, tokenizer, config = job
    device = generation_device(config.device)
    summary_lm.to(device)
    caption_lm.to(device)
    shard = current_shard()
    result = sample_album_texts(summary_lm, caption_lm, tokenizer, config, shard=shard)
    return result if shard.is_main else None


def sampling_metadata(config: SamplingConfig) -> dict[str, Any]:
    """What a reader of the synthetic texts must know about how they were sampled."""
    params = asdict(config)
    for how_not_what in ("show_progress", "nproc"):  # change no text
        params.pop(how_not_what)
    return {
        "album_size_source": "public prior (parameters sampling.photos_per_album: "
                             f"{config.photos_per_album.describe()}); the private album sizes "
                             "were not read, no privacy budget spent",
        "sampling_params": params,
        "seed_derivation": "album i: album_seed(seed, i); its summary and caption j draw from "
                           "text_seed(album seed, role, j) (dpalbum.models.sampler)",
    }

