"""The data card released next to the synthetic albums (DATA_CARD.md): privacy guarantee, models
and their provenance, what the data is for and not for."""

from __future__ import annotations

import math
from typing import Any

from dpalbum.privacy.guarantee import (
    ALBUM_COUNT_SHORT,
    ALBUM_COUNT_WORDS,
    REPLAYABLE_WARNING,
    album_count,
    neighbouring,
    noise_source,
)

LEDGER_KEYS = ("epsilon", "delta", "unit", "mechanisms")


def privacy_summary(ledger: dict[str, Any]) -> dict[str, Any]:
    """ε, δ, unit and mechanisms of a privacy ledger (format: shared/tools/verify_ledger.py),
    JSON-safe: an infinite ε (non-private baseline) is the string "inf"."""
    if not isinstance(ledger, dict):
        raise ValueError(f"privacy_ledger must be the ledger's JSON object, got "
                         f"{type(ledger).__name__}")
    missing = [k for k in LEDGER_KEYS if k not in ledger]
    if missing:
        raise ValueError(f"privacy_ledger lacks {missing}: released albums must carry ε, δ, the "
                         "privacy unit and the mechanisms (see shared/tools/verify_ledger.py); "
                         "run the dp_training pipeline first")
    epsilon = ledger["epsilon"]
    epsilon = math.inf if epsilon in (None, "inf", "Infinity") else float(epsilon)
    return {
        "epsilon": round(epsilon, 4) if math.isfinite(epsilon) else "inf",
        "delta": float(ledger["delta"]),
        "unit": str(ledger["unit"]),
        "budget_epsilon": ledger.get("budget_epsilon"),
        "mechanisms": [dict(m) for m in ledger["mechanisms"]],
        "noise_source": noise_source(ledger),
        "neighbouring": neighbouring(ledger),
        "album_count": album_count(ledger),
        "ledger_updated_at": ledger.get("updated_at"),  # when its last mechanism was charged
    }


def _mechanism_rows(mechanisms: list[dict[str, Any]]) -> list[str]:
    rows = ["| mechanism | kind | noise multiplier | sample rate | steps |",
            "|---|---|---|---|---|"]
    for m in mechanisms:
        rows.append(f"| {m.get('name', '?')} | {m.get('kind', '?')} | "
                    f"{m.get('noise_multiplier', '?')} | {m.get('sample_rate', '-')} | "
                    f"{m.get('steps', '-')} |")
    return rows


def _noise_lines(source: str) -> list[str]:
    """The warning at the top of the card when the noise is not known to be secret."""
    if source == "replayable":
        return [f"**{REPLAYABLE_WARNING}.** The DP noise was drawn from a known seed: anyone who "
                "knows it can regenerate and subtract the noise, so the (ε, δ) below does not "
                "hold. Do not release these albums; re-run without a noise seed.", ""]
    if source == "unknown":
        return ["**Noise source unknown**: this ledger does not record whether the DP noise was "
                "secret (OS entropy) or replayable from a seed (it predates that record). Check "
                "before releasing these albums.", ""]
    return []


def _captioner_rows(captioner: dict[str, Any] | None) -> list[str]:
    """The captioner's row of the models table (public facts of the configuration)."""
    if not captioner:
        return []
    said = f" **{captioner['statement']}**" if captioner.get("out_of_domain") else ""
    return [f"| captioner: {captioner['captioner']} | captions of the PRIVATE photos, from which "
            f"the album texts were made |{said} public model (no ε) |"]


def _captioner_lines(captioner: dict[str, Any] | None) -> list[str]:
    if not captioner or not captioner.get("out_of_domain"):
        return []
    return [f"**Album texts out of domain.** {captioner['statement'][0].upper()}"
            f"{captioner['statement'][1:]}. The captioner was used anyway "
            "(captioning.allow_out_of_domain: true).", ""]


def build_data_card(report: dict[str, Any], n_albums: int, n_photos: int,
                    captioner: dict[str, Any] | None = None) -> str:
    """Markdown data card from the rendering report (which carries the ledger summary) and the
    captioner's provenance (``captioner_provenance``: which model wrote the album texts)."""
    privacy, renderer = report["privacy"], report["renderer"]
    eps, delta, unit = privacy["epsilon"], privacy["delta"], privacy["unit"]
    private = eps != "inf"
    training = renderer.get("training", {})
    selection = training.get("selection")
    finetune = training.get("dp_finetune")
    finetune_steps = (finetune.get("privacy") or finetune).get("steps", "?") if finetune else None
    pretraining = (f"{training.get('n_images', '?')} PUBLIC images ("
                   f"{training.get('data', 'public data')}, selection: {selection})")
    trained_on = (
        f"pre-trained on {pretraining} (private data reached it "
        f"{training.get('private_data_used', 'not at all')}), then fine-tuned with DP-SGD on the "
        f"PRIVATE photos and their captions (album-level clipping, "
        f"{finetune_steps} steps: the 'renderer' mechanism on the ledger)"
        if finetune else
        f"{pretraining}; private data reached it {training.get('private_data_used', 'not at all')}"
    ) if renderer["backend"] == "embedded" else training.get("note", "pretrained by its authors")
    coherence = report["coherence"]
    size = report["image_size"]
    source, count = noise_source(privacy), album_count(privacy)
    headline = (
        "**NOT PRIVATE: ε = ∞. This is a non-private baseline run; do not release these albums.**"
        if not private else
        f"Ledger: (ε = {eps}, δ = {delta:g}) per {unit}, which holds only for secret noise."
        if source == "replayable" else
        f"**Differentially private: (ε = {eps}, δ = {delta:g}) per {unit}.**"
    )
    lines = [
        "# DATA CARD: synthetic photo albums (dpalbum)",
        "",
        *_noise_lines(source),
        headline,
        "",
        *_captioner_lines(captioner),
        "| | |",
        "|---|---|",
        f"| ε (epsilon) | {eps} |",
        f"| δ (delta) | {delta:g} |",
        f"| privacy unit | {unit} |",
        f"| neighbouring datasets | {neighbouring(privacy)} |",
        f"| noise source | {source} |",
        f"| number of albums | {ALBUM_COUNT_SHORT[count]} |",
        f"| albums / photos | {n_albums} / {n_photos} ({size}x{size} PNG) |",
        f"| privacy ledger closed (UTC) | {privacy.get('ledger_updated_at') or '-'} |",
        f"| rendering seed (public: image sampling, not a DP draw) | {report['seed']} |",
        "",
        "## Privacy guarantee",
        f"Every mechanism that read the private albums is listed below; ε is their joint "
        f"composition by the privacy ledger (not a sum by hand), for one {unit} added or removed"
        + (f" (budget ε = {privacy['budget_epsilon']})." if privacy.get("budget_epsilon")
           else "."),
        f"Neighbouring datasets: {neighbouring(privacy)}. The number of albums is "
        f"{ALBUM_COUNT_WORDS[count]}.",
        "Anything computed only from these files keeps the same guarantee (post-processing). "
        "People who appear in several albums are protected less (group privacy).",
        "",
        *_mechanism_rows(privacy["mechanisms"]),
        "",
        "## Models and their provenance",
        "| model | role | trained on |",
        "|---|---|---|",
        *_captioner_rows(captioner),
        "| language models (see the dpsgd mechanisms above) | album summaries, then captions | "
        "pre-trained on public text, fine-tuned with DP-SGD on PRIVATE album texts (on the "
        "ledger) |",
        "| text filters | curation of the synthetic texts | public models, synthetic text only "
        "(post-processing, no ε) |",
        f"| renderer: {renderer['architecture']} | text-to-image, sampler "
        f"{renderer['sampler']} | {trained_on} |",
        f"| text encoder: {renderer['text_encoder']} | renderer conditioning | public |",
        "",
        "## How albums are made coherent",
        f"One seed per album (from the run seed and the album id); shared initial noise "
        f"{'on' if coherence['shared_initial_latents'] else 'off'} (per-photo jitter "
        f"{coherence['latent_jitter']}); protagonist phrase in every prompt "
        f"{'on' if coherence['character_in_every_prompt'] else 'off'}; guidance scale "
        f"{coherence['guidance_scale']}. Each album.json holds the summary, captions, the prompts "
        "actually rendered, the seed and the privacy guarantee.",
        "",
        "## Intended uses",
        "- Exploring and sharing the themes, characters and statistics of the album collection "
        "without exposing any real album.",
        "- Developing, testing and benchmarking tools and models on album-shaped data.",
        "",
        "## Not for",
        "- Learning anything about a specific person or real album, or re-identifying anyone: "
        "the guarantee is designed to prevent it, and any such inference is invalid.",
        "- Conclusions about rare events, rare people or small subgroups: DP noise and the "
        "selection of public data suppress what few albums show.",
        "- Ground truth for evaluation of real-photo models, or photorealism: the photos are "
        "drawn by a small renderer and can be wrong, blurry or biased by its public training "
        "data.",
        "",
    ]
    return "\n".join(lines)
