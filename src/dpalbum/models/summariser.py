"""Album summarisers: the embedded template summariser, or a pretrained causal/instruct LM.

``embedded`` is a *template summariser*, not a learned model: it parses the album's captions with
the demo world's public vocabulary and states the recurring protagonist, the scenes (most frequent
first) and the objects (most frequent first), e.g.
``"an album of a red circle, in the beach and the city, with a ball and a kite"``. The summary
stays parseable by ``dpalbum.albums.vocabulary.parse_caption`` (protagonist and main scene come
back; the parser drops commas and full stops, not colons, so no colon follows the protagonist).
Optionally it names the event whose scenes and objects fit the captions best
(``"a holiday album of ..."``). Captions it cannot parse (real photos) get an extractive summary:
the caption that shares most words with the others.
``pretrained`` prompts any Hugging Face causal LM (a small instruct model on real data) with the
captions and keeps the first line it writes.

Both are public models applied to private captions; nothing here is trained on private data.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import torch

from dpalbum.albums.vocabulary import EVENTS, Protagonist, parse_caption
from dpalbum.models.captioner import TORCH_DTYPES, resolve_device, torch_dtype_of
from dpalbum.params import params

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    "Summarise this photo album in one sentence: name the main character, the places and the "
    "objects.\nPhotos:\n{captions}\nSummary:"
)


@params
class SummariserConfig:
    """How albums are summarised (``params:captioning.summariser``)."""

    backend: str = "embedded"  # "embedded" (template summariser) or "pretrained"
    name_event: bool = True  # embedded: prefix the best-fitting event ("a hike album of ...")
    # pretrained backend
    model_name_or_path: str | None = None  # any causal / instruct LM id or local folder
    prompt: str = DEFAULT_PROMPT  # "{captions}" is replaced by one "- caption" line per photo
    max_new_tokens: int = 48
    batch_size: int = 8
    device: str = "auto"
    torch_dtype: str = "float32"  # float32 | bfloat16 | float16: inference only (public model)

    def __post_init__(self) -> None:
        if self.torch_dtype not in TORCH_DTYPES:
            raise ValueError(f"captioning.summariser.torch_dtype must be one of {TORCH_DTYPES}, "
                             f"got {self.torch_dtype!r}")


def _ranked(items: Sequence[str]) -> list[str]:
    """Distinct items, most frequent first; ties keep first-appearance order."""
    counts = Counter(items)
    first = {item: i for i, item in reversed(list(enumerate(items)))}
    return sorted(counts, key=lambda item: (-counts[item], first[item]))


def _join(phrases: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def best_event(scenes: Sequence[str], objects: Sequence[str]) -> str | None:
    """The event of the public vocabulary whose scenes and objects cover most mentions."""
    scores = {
        event: sum(s in spec["scenes"] for s in scenes) + sum(o in spec["objects"] for o in objects)
        for event, spec in EVENTS.items()
    }
    best = max(scores.values(), default=0)
    return next(event for event, score in scores.items() if score == best) if best else None


def extractive_summary(captions: Sequence[str]) -> str:
    """The most central caption (highest mean word overlap with the others), as a summary."""
    if not captions:
        return "an empty album"
    words = [set(c.lower().split()) for c in captions]

    def overlap(i: int) -> float:
        return sum(len(words[i] & w) / max(1, len(words[i] | w))
                   for j, w in enumerate(words) if j != i)

    central = max(range(len(captions)), key=overlap)  # first one wins ties
    return f"an album of {len(captions)} photos: {captions[central].strip()}"


def template_summary(captions: Sequence[str], name_event: bool = True) -> str:
    """Protagonist, scenes and objects of an album from its captions (see module docstring)."""
    parsed = [parse_caption(c) for c in captions]
    protagonists = [Protagonist(p["colour"], p["shape"]).name for p in parsed
                    if p["colour"] and p["shape"]]
    if not protagonists:
        return extractive_summary(captions)
    scenes = _ranked([p["scene"] for p in parsed if p["scene"]])
    objects = _ranked([o for p in parsed for o in p["objects"]])
    event = best_event([p["scene"] for p in parsed if p["scene"]],
                       [o for p in parsed for o in p["objects"]]) if name_event else None
    text = f"a {event} album" if event else "an album"
    text += f" of a {_ranked(protagonists)[0]}"
    details = []
    if scenes:
        details.append("in " + _join([f"the {s}" for s in scenes]))
    if objects:
        details.append("with " + _join([f"a {o}" for o in objects]))
    return ", ".join([text, *details])


class TemplateSummariser:
    """Embedded template summariser (deterministic, no weights)."""

    kind = "embedded template summariser"

    def __init__(self, name_event: bool = True) -> None:
        self.name_event = name_event

    def summarise(self, albums: Sequence[Sequence[str]]) -> list[str]:
        """One summary per album, from its captions in photo order."""
        return [template_summary(captions, self.name_event) for captions in albums]


class PretrainedSummariser:
    """A Hugging Face causal LM prompted to summarise each album's captions (greedy)."""

    kind = "pretrained LM summariser"

    def __init__(self, model, tokenizer, config: SummariserConfig) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.tokenizer.padding_side = "left"  # batched generation continues every row's end
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    @classmethod
    def load(cls, config: SummariserConfig) -> PretrainedSummariser:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not config.model_name_or_path:
            raise ValueError("summariser backend 'pretrained' needs model_name_or_path "
                             "(e.g. a small instruct LM id or a local folder)")
        model = AutoModelForCausalLM.from_pretrained(config.model_name_or_path,
                                                     dtype=torch_dtype_of(config.torch_dtype))
        tokenizer = AutoTokenizer.from_pretrained(config.model_name_or_path)
        return cls(model.to(resolve_device(config.device)), tokenizer, config)

    def _prompt(self, captions: Sequence[str]) -> str:
        text = self.config.prompt.format(captions="\n".join(f"- {c}" for c in captions))
        if getattr(self.tokenizer, "chat_template", None):  # instruct models expect their chat
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        return text

    @torch.no_grad()
    def summarise(self, albums: Sequence[Sequence[str]]) -> list[str]:
        """One summary per album; an empty generation falls back to the template summary."""
        device = next(self.model.parameters()).device
        limit = getattr(self.model.config, "max_position_embeddings", None)
        summaries: list[str] = []
        for start in range(0, len(albums), self.config.batch_size):
            chunk = albums[start:start + self.config.batch_size]
            inputs = self.tokenizer([self._prompt(c) for c in chunk], return_tensors="pt",
                                    padding=True).to(device)
            n_prompt = inputs["input_ids"].shape[1]
            if limit is not None and n_prompt + self.config.max_new_tokens > limit:
                raise ValueError(
                    f"summariser prompt of {n_prompt} tokens + max_new_tokens "
                    f"{self.config.max_new_tokens} exceeds the model's {limit} positions "
                    f"({self.config.model_name_or_path}): shorten the prompt or use a longer "
                    "context model")
            out = self.model.generate(**inputs, max_new_tokens=self.config.max_new_tokens,
                                      do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)  # (B, T)
            texts = self.tokenizer.batch_decode(out[:, n_prompt:], skip_special_tokens=True)
            for captions, text in zip(chunk, texts):
                first_line = text.strip().split("\n")[0].strip()
                if not first_line:
                    logger.warning("pretrained summariser wrote nothing for an album of %d "
                                   "photos; using the template summary", len(captions))
                    first_line = template_summary(captions)
                summaries.append(first_line)
        return summaries


Summariser = TemplateSummariser | PretrainedSummariser


def build_summariser(config: SummariserConfig) -> Summariser:
    """The template summariser (embedded) or a loaded pretrained LM summariser."""
    if config.backend == "embedded":
        return TemplateSummariser(config.name_event)
    if config.backend == "pretrained":
        return PretrainedSummariser.load(config)
    raise ValueError(f"unknown summariser backend {config.backend!r}: use 'embedded' or "
                     "'pretrained'")
