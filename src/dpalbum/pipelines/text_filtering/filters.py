"""Text-level curation of synthetic albums: pure post-processing, every drop counted by reason.

Reads only synthetic texts, public models (the MiniLM sentence encoder) and public knowledge (the
demo world's vocabulary), so it spends no privacy budget (DESIGN.md, invariant 3).

Filters run in this order; each is switched and tuned in ``parameters_text_filtering.yml``:

1. ``well_formed``      summary / captions that are not text, empty, malformed (special-token
                        leftovers, control characters, U+FFFD) or outside word / character bounds.
2. ``repetition``       degenerate text: the share of word n-grams repeating an earlier n-gram of
                        the same text is above ``max_repeated_ratio``.
3. ``caption_similarity``  captions whose MiniLM cosine to their album's summary is below
                        ``min_similarity``.
4. ``caption_vocabulary``  captions whose protagonist (colour / shape, as read by the demo world's
                        vocabulary parser) differs from the summary's; skipped where the summary
                        names none.
5. ``min_captions``     albums left with fewer than ``min_captions`` captions.
6. ``exact_duplicates`` albums whose normalised summary and caption sequence equal an earlier
                        album's (the first is kept).
7. ``near_duplicates``  albums whose MiniLM embedding (summary and mean caption, equally weighted)
                        has cosine >= ``max_similarity`` with an earlier KEPT album.

A summary failing (1) or (2) drops its album. Deduplication runs last, on the captions that will be
released, so the kept copy is a clean one. Counting: when a filter drops an album, its remaining
captions count as dropped by that filter too, so for every run
``captions_in - sum(captions_dropped) == captions_out`` (and likewise for albums).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dpalbum.albums.vocabulary import SCENES, parse_caption
from dpalbum.params import Cosine, Fraction, PositiveInt, params

Encoder = Callable[[list[str]], np.ndarray]  # texts -> (N, D) L2-normalised embeddings
N_EXAMPLES = 3  # dropped texts quoted per filter in the report (synthetic text only)


# ---- parameters ---------------------------------------------------------------------------------

@params
class LengthBounds:
    """Accepted size of one text, in whitespace words and in characters (bounds inclusive)."""

    min_words: PositiveInt = 1
    max_words: PositiveInt = 100
    min_chars: PositiveInt = 1
    max_chars: PositiveInt = 1000

    def __post_init__(self) -> None:
        for low, high in (("min_words", "max_words"), ("min_chars", "max_chars")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} "
                                 f"({getattr(self, high)}): no text could pass")


@params
class WellFormedFilter:
    enabled: bool = True
    summary: LengthBounds = field(default_factory=LengthBounds)
    caption: LengthBounds = field(default_factory=LengthBounds)
    # leftovers of special tokens a decoder failed to strip (regular expressions, case-insensitive)
    reject_patterns: list[str] = field(default_factory=lambda: [r"<\|[a-z]+\|>", r"\[unused\d+\]",
                                                                r"\[(?:unk|pad|cls|sep|mask)\]"])

    def __post_init__(self) -> None:
        self.regex = re.compile("|".join(self.reject_patterns) or r"(?!)", re.IGNORECASE)


@params
class RepetitionFilter:
    enabled: bool = True
    ngram: PositiveInt = 2
    max_repeated_ratio: Fraction = 0.3


@params
class CaptionSimilarityFilter:
    enabled: bool = True
    min_similarity: Cosine = 0.3


@params
class CaptionVocabularyFilter:
    enabled: bool = True
    fields: list[str] = field(default_factory=lambda: ["colour", "shape"])


@params
class MinCaptionsFilter:
    enabled: bool = True
    min_captions: PositiveInt = 3


@params
class ExactDuplicatesFilter:
    enabled: bool = True


@params
class NearDuplicatesFilter:
    enabled: bool = True
    max_similarity: Cosine = 0.999
    use_captions: bool = True  # False: compare summaries only


FILTER_ORDER: tuple[str, ...] = (
    "well_formed", "repetition", "caption_similarity", "caption_vocabulary", "min_captions",
    "exact_duplicates", "near_duplicates",
)


@params
class TextFilteringConfig:
    """Text filtering parameters (``parameters_text_filtering.yml``, key ``text_filtering``)."""

    text_encoder: str = "embedded"  # public sentence encoder: packaged MiniLM, or an id / folder
    well_formed: WellFormedFilter = field(default_factory=WellFormedFilter)
    repetition: RepetitionFilter = field(default_factory=RepetitionFilter)
    caption_similarity: CaptionSimilarityFilter = field(default_factory=CaptionSimilarityFilter)
    caption_vocabulary: CaptionVocabularyFilter = field(default_factory=CaptionVocabularyFilter)
    min_captions: MinCaptionsFilter = field(default_factory=MinCaptionsFilter)
    exact_duplicates: ExactDuplicatesFilter = field(default_factory=ExactDuplicatesFilter)
    near_duplicates: NearDuplicatesFilter = field(default_factory=NearDuplicatesFilter)

    def __post_init__(self) -> None:
        unknown = set(self.caption_vocabulary.fields) - {"colour", "shape", "scene"}
        if unknown:
            raise ValueError(f"text_filtering.caption_vocabulary.fields: unknown {sorted(unknown)}"
                             "; use colour, shape and/or scene")

    @classmethod
    def from_params(cls, params: TextFilteringConfig | dict[str, Any]) -> TextFilteringConfig:
        """Accept the validated object Kedro passes or a raw ``params:text_filtering`` dict."""
        return params if isinstance(params, cls) else cls(**params)


# ---- bookkeeping --------------------------------------------------------------------------------

@dataclass
class _Album:
    row: dict[str, Any]  # the input row (album_id, summary, seed, ...)
    captions: list[Any]


class _Step:
    """Counts of one filter: what came in, what it dropped and why."""

    def __init__(self, name: str, params: Any, albums: list[_Album]) -> None:
        self.name, self.params = name, params
        self.albums_in = len(albums)
        self.captions_in = sum(len(a.captions) for a in albums)
        self.albums_dropped = self.captions_dropped = 0
        self.reasons: Counter[str] = Counter()
        self.examples: list[dict[str, str]] = []

    def drop_album(self, album: _Album, reason: str, text: Any = None) -> None:
        self.albums_dropped += 1
        self.captions_dropped += len(album.captions)
        self._note(album, f"album_{reason}", album.row.get("summary") if text is None else text)

    def drop_caption(self, album: _Album, reason: str, caption: Any) -> None:
        self.captions_dropped += 1
        self._note(album, f"caption_{reason}", caption)

    def _note(self, album: _Album, reason: str, text: Any) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < N_EXAMPLES:
            self.examples.append({"album_id": str(album.row.get("album_id")), "reason": reason,
                                  "text": str(text)[:200]})

    def report(self) -> dict[str, Any]:
        enabled = getattr(self.params, "enabled", False)
        params = {k: v for k, v in asdict(self.params).items() if k != "enabled"}
        return {
            "enabled": enabled, "params": params,
            "albums_in": self.albums_in, "albums_dropped": self.albums_dropped,
            "captions_in": self.captions_in, "captions_dropped": self.captions_dropped,
            "reasons": dict(sorted(self.reasons.items())), "examples": self.examples,
        }


def _keep_captions(
    albums: list[_Album], step: _Step, reason_of: Callable[[_Album, Any], str | None]
) -> list[_Album]:
    """Drop every caption for which ``reason_of`` names a reason; albums stay (maybe emptier)."""
    for album in albums:
        kept = []
        for caption in album.captions:
            reason = reason_of(album, caption)
            if reason is None:
                kept.append(caption)
            else:
                step.drop_caption(album, reason, caption)
        album.captions = kept
    return albums


def _keep_albums(
    albums: list[_Album], step: _Step, reason_of: Callable[[_Album], str | None]
) -> list[_Album]:
    kept = []
    for album in albums:
        reason = reason_of(album)
        if reason is None:
            kept.append(album)
        else:
            step.drop_album(album, reason)
    return kept


# ---- the filters --------------------------------------------------------------------------------

def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def malformed_reason(text: Any, bounds: LengthBounds, regex: re.Pattern) -> str | None:
    """Why one text is not well formed (None if it is)."""
    if not isinstance(text, str):
        return "not_text"
    stripped = text.strip()
    if not stripped:
        return "empty"
    if "\ufffd" in stripped or regex.search(stripped) or any(
        unicodedata.category(ch) in ("Cc", "Cs", "Co") for ch in stripped
    ):
        return "malformed"
    words, chars = len(stripped.split()), len(stripped)
    if words < bounds.min_words or chars < bounds.min_chars:
        return "too_short"
    if words > bounds.max_words or chars > bounds.max_chars:
        return "too_long"
    return None


def repeated_ngram_ratio(text: str, n: int) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier n-gram (0 for short texts)."""
    words = text.lower().split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def _well_formed(albums: list[_Album], cfg: WellFormedFilter, step: _Step, _) -> list[_Album]:
    def summary_reason(album: _Album) -> str | None:
        reason = malformed_reason(album.row["summary"], cfg.summary, cfg.regex)
        return None if reason is None else f"summary_{reason}"

    albums = _keep_albums(albums, step, summary_reason)
    return _keep_captions(albums, step, lambda a, c: malformed_reason(c, cfg.caption, cfg.regex))


def _repetition(albums: list[_Album], cfg: RepetitionFilter, step: _Step, _) -> list[_Album]:
    def degenerate(text: str) -> bool:
        return repeated_ngram_ratio(text, cfg.ngram) > cfg.max_repeated_ratio

    albums = _keep_albums(albums, step,
                          lambda a: "summary_repetitive" if degenerate(a.row["summary"]) else None)
    return _keep_captions(albums, step, lambda a, c: "repetitive" if degenerate(c) else None)


class _Embeddings:
    """Encode each distinct text once, lazily, in one call per request."""

    def __init__(self, encode: Encoder) -> None:
        self.encode, self.cache = encode, {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, np.asarray(self.encode(missing), dtype=np.float32)))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 0), np.float32)

    def prefetch(self, albums: list[_Album]) -> None:
        self([a.row["summary"] for a in albums] + [c for a in albums for c in a.captions])


def _caption_similarity(albums, cfg: CaptionSimilarityFilter, step: _Step, embed: _Embeddings):
    embed.prefetch(albums)

    def reason(album: _Album, caption: str) -> str | None:
        summary, vector = embed([album.row["summary"], caption])
        return "unlike_summary" if float(summary @ vector) < cfg.min_similarity else None

    return _keep_captions(albums, step, reason)


def _caption_vocabulary(albums, cfg: CaptionVocabularyFilter, step: _Step, _) -> list[_Album]:
    @functools.cache
    def expected(summary: str) -> dict[str, Any]:
        parsed = parse_caption(summary)
        return {"colour": parsed["colour"], "shape": parsed["shape"],
                "scene": set(parse_caption_scenes(summary))}  # a summary may name several scenes

    def reason(album: _Album, caption: str) -> str | None:
        wanted, found = expected(album.row["summary"]), parse_caption(caption)
        for name in cfg.fields:  # a field the summary does not name cannot be checked
            if name == "scene":
                if wanted["scene"] and found["scene"] not in wanted["scene"]:
                    return "scene_mismatch"
            elif wanted[name] is not None and found[name] != wanted[name]:
                return f"{name}_mismatch"
        return None

    return _keep_captions(albums, step, reason)


def parse_caption_scenes(text: str) -> list[str]:
    """Every demo-world scene a text names, in order (``parse_caption`` keeps the first only)."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    return [w for w in words if w in SCENES]


def _min_captions(albums, cfg: MinCaptionsFilter, step: _Step, _) -> list[_Album]:
    return _keep_albums(albums, step, lambda a: (
        "too_few_captions" if len(a.captions) < cfg.min_captions else None))


def _exact_duplicates(albums, cfg: ExactDuplicatesFilter, step: _Step, _) -> list[_Album]:
    seen: set[tuple[str, ...]] = set()

    def reason(album: _Album) -> str | None:
        key = (_normalise(album.row["summary"]), *map(_normalise, album.captions))
        if key in seen:
            return "exact_duplicate"
        seen.add(key)
        return None

    return _keep_albums(albums, step, reason)


def _near_duplicates(albums, cfg: NearDuplicatesFilter, step: _Step, embed: _Embeddings):
    if not albums:
        return albums
    embed.prefetch(albums)
    vectors = embed([a.row["summary"] for a in albums])  # (N, D)
    if cfg.use_captions:
        means = np.stack([embed(a.captions).mean(axis=0) if a.captions
                          else np.zeros(vectors.shape[1], np.float32) for a in albums])
        norms = np.linalg.norm(means, axis=1, keepdims=True)
        means = np.divide(means, norms, out=np.zeros_like(means), where=norms > 0)
        vectors = np.concatenate([vectors, means], axis=1) / np.sqrt(2.0)  # (N, 2D)
    keep = first_of_near_duplicates(vectors, cfg.max_similarity)
    kept = []
    for album, ok in zip(albums, keep):
        if ok:
            kept.append(album)
        else:
            step.drop_album(album, "near_duplicate")
    return kept


def first_of_near_duplicates(vectors: np.ndarray, threshold: float, chunk: int = 1024):
    """Greedy keep-first: row i is kept unless cosine >= threshold with an earlier KEPT row.

    Exact, and O(N^2 D) in chunks of the similarity matrix, so it scales past a few thousand rows.
    """
    n = len(vectors)
    earlier: list[np.ndarray] = []  # per row: earlier rows at or above the threshold
    for start in range(0, n, chunk):
        sims = vectors[start:start + chunk] @ vectors.T  # (chunk, N)
        for r, row in enumerate(sims):
            i = start + r
            earlier.append(np.flatnonzero(row[:i] >= threshold))
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        keep[i] = not keep[earlier[i]].any()
    return keep


_FILTERS = {
    "well_formed": _well_formed, "repetition": _repetition,
    "caption_similarity": _caption_similarity, "caption_vocabulary": _caption_vocabulary,
    "min_captions": _min_captions, "exact_duplicates": _exact_duplicates,
    "near_duplicates": _near_duplicates,
}


def _read_albums(frame: pd.DataFrame) -> tuple[list[_Album], list[tuple[_Album, str]]]:
    """Rows as albums, and rows no filter can read with the reason."""
    albums, unreadable = [], []
    for row in frame.to_dict("records"):
        captions = row.pop("captions", None)
        listed = isinstance(captions, (list, tuple, np.ndarray))
        album = _Album(row, list(captions) if listed else [])
        if not listed:
            unreadable.append((album, "captions_not_a_list"))
        elif not isinstance(row.get("summary"), str):
            unreadable.append((album, "summary_not_text"))
        else:
            albums.append(album)
    return albums, unreadable


# ---- entry point --------------------------------------------------------------------------------

def curate_texts(
    synthetic_texts: pd.DataFrame, config: TextFilteringConfig, encode: Encoder | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Apply the enabled filters in ``FILTER_ORDER``; returns (curated texts, report).

    ``encode`` maps texts to L2-normalised embeddings; by default the public MiniLM named by
    ``config.text_encoder`` (loaded only if a similarity filter is enabled).
    """
    if encode is None:
        from dpalbum.models.text_encoder import encode_texts

        encode = functools.partial(encode_texts, model_name_or_path=config.text_encoder)
    missing = {"album_id", "summary", "captions"} - set(synthetic_texts.columns)
    if missing:
        raise ValueError(f"synthetic_texts lacks columns {sorted(missing)} (has "
                         f"{list(synthetic_texts.columns)}): is it the sampling pipeline's output?")
    embed = _Embeddings(encode)
    columns = list(synthetic_texts.columns)
    albums, unreadable = _read_albums(synthetic_texts)
    captions_in = sum(len(a.captions) for a in albums) + sum(len(a.captions) for a, _ in unreadable)
    report_filters: dict[str, Any] = {}
    for name in FILTER_ORDER:
        cfg = getattr(config, name)
        step = _Step(name, cfg, albums)
        if name == "well_formed":  # rows later filters cannot read go, even if disabled
            step.albums_in += len(unreadable)
            step.captions_in = captions_in
            for album, reason in unreadable:
                step.drop_album(album, reason, album.row.get("summary"))
            albums = _keep_captions(albums, step, lambda a, c: (
                None if isinstance(c, str) else "not_text"))
        if cfg.enabled:
            albums = _FILTERS[name](albums, cfg, step, embed)
        report_filters[name] = step.report()

    curated = pd.DataFrame(
        [{**a.row, "captions": [str(c) for c in a.captions]} for a in albums], columns=columns
    ).astype(synthetic_texts.dtypes.to_dict())  # same schema, even when nothing is left
    curated.attrs = dict(synthetic_texts.attrs)
    captions_out = sum(len(a.captions) for a in albums)
    totals = {
        "albums_in": len(synthetic_texts), "albums_out": len(albums),
        "albums_dropped": len(synthetic_texts) - len(albums),
        "captions_in": captions_in, "captions_out": captions_out,
        "captions_dropped": captions_in - captions_out,
    }
    report = {
        "reads": ["synthetic_texts"],  # and public models only: no private data, no ε spent
        "text_encoder": config.text_encoder,
        "order": list(FILTER_ORDER),
        "totals": totals,
        "filters": report_filters,
    }
    curated.attrs["text_filtering"] = totals
    return curated, report
