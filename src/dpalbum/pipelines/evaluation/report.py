"""The metrics documents (metrics.json, released_metrics.json), their MLflow form, report.html.

Privacy marking: a section is ``internal`` when computing it read private data (photos, texts,
ground truth or the private-trained LMs on private texts). Internal numbers are aggregates, not
covered by the ledger's ε: they stay with the data team. So metrics.json (every section) carries
``"internal": true``; released_metrics.json (released sections and the ledger's privacy block,
``"internal": false``) and the released metrics are what the run's MLflow run gets; internal
metrics go to a run of the internal experiment, or nowhere. The report never shows a private
photo or text: it opens with synthetic albums beside public-corpus images; by default
(``include_internal_metrics: false``) it also drops internal numbers and can ship with the data.
Each model and metric links to the MLflow run that holds it (``MlflowLinks``: the MLflow UI's
``#/experiments/<id>/runs/<id>`` pages), when the report is built inside a tracked run.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from dpalbum.albums.model import AlbumSet
from dpalbum.privacy.guarantee import (
    REPLAYABLE_WARNING,
    album_count,
    neighbouring,
    noise_source,
)

# One line per metric: what it measures and which way is better. Keys: section.metric (task-
# and role-specific names are matched on their suffix, see ``explain``).
EXPLANATIONS: dict[str, str] = {
    "evaluation_network.scene_accuracy": "evaluation network's scene accuracy on public held-out "
                                         "images (how far its labels can be trusted)",
    "evaluation_network.protagonist_accuracy": "evaluation network's protagonist (colour and "
                                               "shape) accuracy on public held-out images",
    "evaluation_network.colour_accuracy": "evaluation network's protagonist-colour accuracy on "
                                          "public held-out images",
    "evaluation_network.shape_accuracy": "evaluation network's protagonist-shape accuracy on "
                                         "public held-out images",
    "evaluation_network.objects_f1": "evaluation network's object micro-F1 on public held-out "
                                     "images",
    "image_fidelity.local_fd": "Fréchet distance on the local evaluation network's features, "
                               "synthetic vs held-out photos (lower is better; local metric, not "
                               "comparable to published FID)",
    "image_fidelity.fid": "standard FID (Inception-v3) synthetic vs held-out photos (lower is "
                          "better)",
    "image_fidelity.clip_fd": "Fréchet distance on a CLIP model's image embeddings, synthetic vs "
                              "held-out photos (lower is better)",
    "image_fidelity.kid": "kernel distance (unbiased MMD², cubic kernel) on the same features "
                          "(lower is better; ~0 = same distribution)",
    "image_fidelity.kid_std": "spread of KID over random subsets",
    "image_fidelity.precision": "share of synthetic photos inside the real photos' k-NN manifold "
                                "(realism; higher is better)",
    "image_fidelity.recall": "share of real photos inside the synthetic k-NN manifold (diversity; "
                             "higher is better)",
    "text_fidelity.summary_fd": "Fréchet distance of MiniLM embeddings, synthetic vs private "
                                "album summaries (lower is better)",
    "text_fidelity.summary_mauve": "MAUVE of synthetic vs private summaries on MiniLM features "
                                   "(1 = indistinguishable)",
    "text_fidelity.caption_fd": "Fréchet distance of MiniLM embeddings, synthetic vs private "
                                "captions (lower is better)",
    "text_fidelity.caption_mauve": "MAUVE of synthetic vs private captions (1 = "
                                   "indistinguishable)",
    "photo_within": "mean cosine similarity of two photos of the same album (evaluation "
                    "features)",
    "photo_between": "mean cosine similarity of two photos of different albums",
    "photo_gap": "within minus between for photos: how much an album hangs together (higher is "
                 "more coherent)",
    "caption_within": "mean cosine similarity of two captions of the same album (MiniLM)",
    "caption_between": "mean cosine similarity of two captions of different albums",
    "caption_gap": "within minus between for captions (higher is more coherent)",
    "caption_agreement.scene_agreement": "share of rendered photos whose predicted scene is the "
                                         "one their caption names",
    "caption_agreement.protagonist_agreement": "share of rendered photos whose predicted "
                                               "protagonist is the one their caption names",
    "caption_agreement.protagonist_consistency": "mean share of an album's photos showing its "
                                                 "most frequent protagonist",
    "caption_agreement.albums_consistent_90": "share of albums whose protagonist agrees on at "
                                              "least 90% of the photos",
    "tv_scene": "total-variation distance of scene labels to the private photos' (0 = same "
                "distribution, 1 = disjoint)",
    "tv_protagonist": "total-variation distance of protagonist labels to the private photos'",
    "tv_objects": "total-variation distance of object mentions to the private photos'",
    "tv_event": "total-variation distance of album themes (events) to the private albums'",
    "accuracy_synthetic": "held-out accuracy of a classifier trained on synthetic albums (TSTR)",
    "accuracy_real": "held-out accuracy of the same classifier trained on real training albums",
    "relative": "TSTR accuracy / real-trained accuracy (1 = synthetic data as useful as real)",
    "majority_baseline": "held-out accuracy of always guessing the most common real class",
    "synthetic_unlabelled": "synthetic albums left out: no label could be parsed from their text",
    "mean_loss_members": "mean per-album LM loss of training albums",
    "mean_loss_nonmembers": "mean per-album LM loss of held-out albums",
    "fpr_resolution": "smallest non-zero FPR the number of non-members allows",
    "auc": "membership-inference ROC AUC, members vs held-out albums, from per-album LM loss "
           "(0.5 = no signal)",
    "tpr_at_1pct_fpr": "share of members the loss attack finds at 1% false-positive rate (at "
                       "FPR 0 below 100 non-members)",
    "epsilon_lower_bound": "ε the attack certifies (Clopper-Pearson, 95%); must stay ≤ the "
                           "claimed ε",
    "verbatim_ceiling_auc": "AUC of an oracle knowing every training text verbatim: non-members "
                            "repeating members' texts cap what any loss attack can find",
    "ref_auc": "AUC of the reference-calibrated attack (LM loss minus the public pre-trained "
               "LM's loss; 0.5 = no signal)",
    "ref_tpr_at_1pct_fpr": "TPR at 1% FPR of the reference-calibrated attack",
    "ref_epsilon_lower_bound": "ε the reference-calibrated attack certifies (95%)",
    "canary_auc": "membership AUC of the loss attack, inserted vs held-out canary albums (0.5 = "
                  "no signal; ≥ 0.8 expected without DP)",
    "canary_tpr_at_1pct_fpr": "share of inserted canaries the loss attack finds at 1% FPR",
    "canary_epsilon_lower_bound": "ε the canary attack certifies (95%); must stay ≤ the "
                                  "audit LM's ε",
    "member_auc": "membership AUC of the loss attack on the audit LM, training vs held-out "
                  "albums",
    "member_tpr_at_1pct_fpr": "share of training albums found at 1% FPR (audit LM)",
    "canary_captions_regenerated": "distinct inserted canary captions sampled verbatim",
    "canary_caption_hits": "sampled captions equal to an inserted canary caption",
    "canary_summaries_regenerated": "distinct inserted canary summaries sampled verbatim",
    "heldout_canary_captions_regenerated": "the same for held-out canaries, never trained on "
                                           "(chance level: expect 0)",
    "heldout_canary_caption_hits": "sampled captions equal to a held-out canary caption",
    "heldout_canary_summaries_regenerated": "held-out canary summaries sampled verbatim",
}

# Prefixes that qualify a metric's base explanation (attribute fidelity, counts).
QUALIFIERS: dict[str, str] = {
    "text_": " (synthetic texts, parsed with the demo vocabulary)",
    "image_": " (synthetic photos, labelled by the evaluation network)",
}

# Mechanism columns of the ledger table, in order (those present in the ledger are shown).
LEDGER_COLUMNS = ("name", "kind", "epsilon_share", "epsilon_alone", "noise_multiplier",
                  "sample_rate", "steps", "status")

SECTION_TITLES: dict[str, str] = {
    "evaluation_network": "Evaluation network (public data)",
    "image_fidelity": "Image fidelity",
    "text_fidelity": "Text fidelity",
    "album_coherence": "Album coherence (synthetic)",
    "private_coherence": "Album coherence (private reference)",
    "caption_agreement": "Photo-caption agreement (demo world)",
    "attribute_fidelity": "Attribute fidelity (demo world)",
    "utility": "Utility: train on synthetic, test on real",
    "membership_inference": "Privacy audit: membership inference",
    "privacy_audit": "Privacy audit: canaries planted in an audit run",
}


# The released models, by catalog name, and what the report calls them. Each is looked up in
# MLflow as a run artifact ``models/<name>`` (MlflowReleaseHook) or a logged model of that name.
RELEASED_MODELS: dict[str, str] = {"summary_lm": "summary LM", "caption_lm": "caption LM",
                                   "renderer_model": "renderer"}
METRIC_PREFIX = "eval"  # evaluation_mlflow_metrics' prefix (catalog_evaluation.yml)


@dataclass(frozen=True)
class RunRef:
    """One MLflow run, and where in it a thing lives (an artifact path, a logged model id)."""

    experiment_id: str
    run_id: str
    artifact_path: str | None = None


@dataclass(frozen=True)
class MlflowLinks:
    """Where the report's metrics and models live in MLflow, as MLflow UI links.

    ``ui_url`` is the MLflow UI's address (``mlflow ui`` in README); ``run`` the run that
    computed the metrics (released ones there, internal ones on its "internal-evaluation" child
    run); ``models`` each released model's run, None when no run holds it."""

    ui_url: str
    run: RunRef
    models: dict[str, RunRef | None] = field(default_factory=dict)

    def run_url(self, ref: RunRef | None = None, tab: str = "") -> str:
        ref = ref or self.run
        return (f"{self.ui_url.rstrip('/')}/#/experiments/{quote(ref.experiment_id)}/runs/"
                f"{quote(ref.run_id)}" + (f"/{tab}" if tab else ""))

    def model_url(self, name: str) -> str | None:
        ref = self.models.get(name)
        if ref is None:
            return None
        tab = f"artifacts/{quote(ref.artifact_path)}" if ref.artifact_path else ""
        return self.run_url(ref, tab)

    def metrics_url(self) -> str:
        return self.run_url(tab="model-metrics")


def _model_run(client: Any, experiment_id: str, candidates: list[str],
               name: str) -> RunRef | None:
    """The run that logged model ``name``: the first of ``candidates`` (this run, then the
    experiment's recent runs) with a ``models/<name>`` artifact, else the run of the newest MLflow
    logged model of that name, else None."""
    for run_id in candidates:
        if any(a.path == f"models/{name}" for a in client.list_artifacts(run_id, "models")):
            return RunRef(experiment_id, run_id, f"models/{name}")
    try:  # MLflow 3 logged models (mlflow.<flavour>.log_model(name=...))
        found = client.search_logged_models(experiment_ids=[experiment_id],
                                            filter_string=f"name = '{name}'", max_results=1,
                                            order_by=[{"field_name": "creation_timestamp",
                                                       "ascending": False}])
    except Exception:  # noqa: BLE001 - a store without logged models: the model is not there
        return None
    model = next(iter(found), None)
    return RunRef(experiment_id, model.source_run_id) if model and model.source_run_id else None


def mlflow_links(client: Any, ui_url: str, experiment_id: str, run_id: str) -> MlflowLinks:
    """The links of run ``run_id``: its own page and each released model's run (looked for in
    this run, then the experiment's 50 most recent runs)."""
    recent = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"],
                                max_results=50)
    candidates = [run_id] + [r.info.run_id for r in recent if r.info.run_id != run_id]
    return MlflowLinks(ui_url, RunRef(experiment_id, run_id),
                       {name: _model_run(client, experiment_id, candidates, name)
                        for name in RELEASED_MODELS})


def active_mlflow_links(ui_url: str) -> MlflowLinks | None:
    """The MLflow links of the run active now (kedro-mlflow's, during ``kedro run``), None
    outside a run. A tracking server (http/https URI) is also the UI; else ``ui_url``."""
    import mlflow
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    if active is None:
        return None
    tracking_uri = mlflow.get_tracking_uri()
    ui = tracking_uri if tracking_uri.startswith(("http://", "https://")) else ui_url
    return mlflow_links(MlflowClient(), ui, active.info.experiment_id, active.info.run_id)


def section(name: str, internal: bool, metrics: dict[str, float] | None = None,
            absent: str | None = None, notes: dict[str, Any] | None = None) -> dict[str, Any]:
    """One metrics section: numbers, or the reason an input it needs is absent."""
    if (metrics is None) == (absent is None):
        raise ValueError(f"section {name!r}: give either metrics or an absent reason")
    return {"name": name, "internal": internal,
            "metrics": {k: float(v) for k, v in (metrics or {}).items()},
            "absent": absent, "notes": notes or {}}


def missing_input(name: str, input_name: str, why: str) -> dict[str, Any]:
    """The section of a metric whose input does not exist in this run (say so, count it)."""
    return section(name, internal=True, absent=f"not available: no {input_name} ({why})",
                   notes={"missing_input": input_name})


def _json_number(value: float) -> float | str | None:
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 6)


INTERNAL_MEANS = ("computed from private data (photos, texts, ground truth): aggregate "
                  "statistics NOT covered by the privacy ledger; keep inside the team")


def privacy_block(privacy_ledger: dict[str, Any]) -> dict[str, Any]:
    """The ledger facts both metrics documents carry (missing noise source: "unknown")."""
    block = {k: privacy_ledger.get(k) for k in ("epsilon", "delta", "unit", "budget_epsilon")}
    return block | {"neighbouring": neighbouring(privacy_ledger),
                    "noise_source": noise_source(privacy_ledger),
                    "album_count": album_count(privacy_ledger)}


def assemble_metrics(privacy_ledger: dict[str, Any], sections: list[dict[str, Any]],
                     captioner: dict[str, Any] | None = None) -> dict[str, Any]:
    """metrics.json (internal): run privacy, released and internal sections, what was absent;
    ``captioner``: which captioner wrote the album texts (public: from the configuration)."""
    # No timestamp: the same inputs give the same bytes (the MLflow run records when).
    doc: dict[str, Any] = {
        "internal": True, "internal_means": INTERNAL_MEANS,
        "privacy": privacy_block(privacy_ledger),
        **({"captioner": captioner} if captioner else {}),
        "released": {}, "internal_sections": {}, "absent": {}, "internal_absent": {},
        "notes": {},
    }
    for s in sections:
        if s["absent"] is not None:
            doc["internal_absent" if s["internal"] else "absent"][s["name"]] = s["absent"]
        else:
            part = "internal_sections" if s["internal"] else "released"
            doc[part][s["name"]] = {k: _json_number(v) for k, v in s["metrics"].items()}
        if s["notes"]:
            doc["notes"][s["name"]] = s["notes"]
    missing = [s["notes"].get("missing_input") for s in sections if s["absent"] is not None]
    doc["skipped"] = {"sections": len(doc["absent"]) + len(doc["internal_absent"]),
                      "missing_inputs": dict(Counter(m for m in missing if m))}
    return doc


def released_metrics(document: dict[str, Any]) -> dict[str, Any]:
    """released_metrics.json: the released sections and the privacy block, nothing internal."""
    released = set(document["released"]) | set(document["absent"])
    return {"internal": False,
            "privacy": document["privacy"],
            **({"captioner": document["captioner"]} if "captioner" in document else {}),
            "released": document["released"],
            "absent": document["absent"],
            "notes": {k: v for k, v in document["notes"].items() if k in released}}


def _finite_metrics(part: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {f"{name}.{key}": {"value": float(value), "step": 0}
            for name, values in part.items() for key, value in values.items()
            if isinstance(value, int | float) and math.isfinite(value)}


def mlflow_metrics(document: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Released sections' finite numbers and ε as ``{section.metric: {value, step}}``
    (MlflowMetricsHistoryDataset): never an internal section, whichever document is given."""
    out = _finite_metrics(document["released"])
    epsilon = _epsilon(document["privacy"])
    if math.isfinite(epsilon):
        out["privacy.epsilon"] = {"value": epsilon, "step": 0}
    return out


def internal_mlflow_metrics(document: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Internal sections' finite numbers and the skipped counts, for the internal run."""
    out = _finite_metrics(document["internal_sections"])
    skipped = document.get("skipped", {})
    if skipped:
        out["skipped.sections"] = {"value": float(skipped["sections"]), "step": 0}
        for name, count in skipped["missing_inputs"].items():
            out[f"skipped.missing_{name}"] = {"value": float(count), "step": 0}
    return out


def _epsilon(privacy: dict[str, Any]) -> float:
    eps = privacy.get("epsilon")
    return math.inf if eps in (None, "inf", "Infinity") else float(eps)


def explain(section_name: str, metric: str) -> str:
    """The one-line explanation of a metric: its exact key, else its longest known suffix (with
    the qualifier of its prefix), else a generic line for counts."""
    key = f"{section_name}.{metric}"
    if key in EXPLANATIONS:
        return EXPLANATIONS[key]
    if metric.startswith("floor_"):
        return (f"{metric.removeprefix('floor_')} between held-out and training private albums: "
                "the floor sampling noise alone reaches")
    suffixes = [k for k in EXPLANATIONS if "." not in k and metric.endswith(k)]
    if suffixes:
        qualifier = next((q for p, q in QUALIFIERS.items() if metric.startswith(p)), "")
        return EXPLANATIONS[max(suffixes, key=len)] + qualifier
    if metric.startswith("n_") or "_n_" in metric:
        return "number of items the metric was computed on"
    return ""


# ---- HTML ---------------------------------------------------------------------------------------

def png_data_uri(image: np.ndarray | bytes) -> str:
    """An inline ``data:image/png;base64`` URI for an RGB array or PNG bytes."""
    if not isinstance(image, bytes | bytearray):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
        image = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _ledger_html(ledger: dict[str, Any]) -> str:
    eps = _epsilon(ledger)
    shown = "∞ (NON-PRIVATE baseline)" if math.isinf(eps) else _format(eps)
    head = (f"<p class='privacy'>ε = <b>{shown}</b>, δ = <b>{_format(ledger.get('delta'))}</b>, "
            f"unit = <b>{html.escape(str(ledger.get('unit', 'unknown')))}</b>"
            + (f", budget ε = {_format(ledger.get('budget_epsilon'))}"
               if ledger.get("budget_epsilon") is not None else "") + "</p>"
            f"<p class='privacy'>neighbouring datasets: {html.escape(neighbouring(ledger))}; "
            f"noise source: <b>{html.escape(noise_source(ledger))}</b>; number of albums: "
            f"<b>{html.escape(album_count(ledger))}</b> (dp: a DP count; public: declared "
            "public, not protected)</p>")
    mechanisms = ledger.get("mechanisms") or []
    if not mechanisms:
        return head + "<p class='absent'>The ledger lists no mechanism.</p>"
    present = {k for m in mechanisms for k in m}
    columns = [k for k in LEDGER_COLUMNS if k in present]
    rows = "".join("<tr>" + "".join(f"<td>{_format(m.get(c))}</td>" for c in columns) + "</tr>"
                   for m in mechanisms)
    header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return head + f"<table class='ledger'><tr>{header}</tr>{rows}</table>"


def _link(url: str, text: str, title: str = "") -> str:
    """An MLflow UI link (opens beside the report)."""
    hover = f" title='{html.escape(title)}'" if title else ""
    return (f"<a class='mlflow' href='{html.escape(url)}' target='_blank' rel='noopener'"
            f"{hover}>{html.escape(text)}</a>")


def _metric_link(links: MlflowLinks | None, section_name: str, metric: str, value: Any,
                 internal: bool) -> str:
    """The metrics table's MLflow cell: the run that holds this number, or why none does."""
    if links is None:
        return "<td class='mlflow'>—</td>"
    key = f"{METRIC_PREFIX}.{section_name}.{metric}"
    if internal:
        return ("<td class='mlflow'>" + _link(
            links.run_url(), "internal-evaluation run (internal experiment)",
            f"{key}: on the run 'internal-evaluation' of the experiment <experiment>-internal "
            "(tagged dpalbum.internal=true and with this run's id), when evaluation.tracking "
            "sends internal metrics to MLflow") + "</td>")
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "<td class='mlflow absent'>not logged (not a finite number)</td>"
    return f"<td class='mlflow'>{_link(links.metrics_url(), key, 'metric ' + key)}</td>"


def _metrics_html(doc: dict[str, Any], include_internal: bool,
                  links: MlflowLinks | None = None) -> str:
    parts = []
    if links is not None:
        parts.append(f"<p>Every released number below is a metric of MLflow run "
                     f"{_link(links.run_url(), links.run.run_id)} (prefix "
                     f"<code>{METRIC_PREFIX}.</code>).</p>")
    groups = [("released", False)] + ([("internal_sections", True)] if include_internal else [])
    for part, internal in groups:
        for name, values in doc.get(part, {}).items():
            rows = "".join(
                f"<tr><td>{html.escape(k)}</td><td class='value'>{_format(v)}</td>"
                f"<td>{html.escape(explain(name, k))}</td>"
                f"{_metric_link(links, name, k, v, internal)}</tr>" for k, v in values.items())
            badge = "<span class='internal'>internal</span>" if internal else ""
            title = html.escape(SECTION_TITLES.get(name, name))
            parts.append(f"<h3>{title} {badge}</h3><table class='metrics' data-section="
                         f"'{html.escape(name)}'><tr><th>metric</th><th>value</th>"
                         f"<th>what it means</th><th>MLflow</th></tr>{rows}</table>")
    absent = doc.get("absent", {}) | (doc.get("internal_absent", {}) if include_internal else {})
    if absent:
        items = "".join(f"<li><b>{html.escape(SECTION_TITLES.get(k, k))}</b>: "
                        f"{html.escape(v)}</li>" for k, v in absent.items())
        parts.append(f"<h3>Not measured in this run</h3><ul class='absent'>{items}</ul>")
    if not include_internal:
        parts.append("<p class='absent'>Internal metrics (computed on private data) are left "
                     "out of this released report.</p>")
    return "".join(parts)


def _models_html(links: MlflowLinks | None) -> str:
    """The released models, each linked to the MLflow run that logged it."""
    if links is None:
        return ("<p class='absent'>This report was not built inside an MLflow run (every "
                "<code>kedro run</code> is one): no links to models or metrics.</p>")
    rows = []
    for name, label in RELEASED_MODELS.items():
        ref, url = links.models.get(name), links.model_url(name)
        cell = (_link(url, f"run {ref.run_id}" + (f" · {ref.artifact_path}"
                                                   if ref.artifact_path else ""))
                if ref is not None and url else
                "<span class='absent'>not found in this MLflow experiment</span>")
        rows.append(f"<tr><td>{html.escape(label)}</td><td><code>{html.escape(name)}</code>"
                    f"</td><td>{cell}</td></tr>")
    return ("<table class='models'><tr><th>model</th><th>catalog entry</th><th>MLflow</th></tr>"
            + "".join(rows) + "</table>")


def _photo_html(image: np.ndarray, caption: str, px: int) -> str:
    return (f"<div class='photo'><img src='{png_data_uri(image)}' width='{px}' height='{px}' "
            f"alt='{html.escape(caption)}'><span>{html.escape(caption)}</span></div>")


def _gallery_html(albums: AlbumSet, n: int, px: int, rng: np.random.Generator) -> str:
    chosen = sorted(rng.choice(len(albums), size=min(n, len(albums)), replace=False).tolist())
    figures = []
    for i in chosen:
        album = albums.albums[i]
        photos = "".join(_photo_html(p.image, p.caption or "", px) for p in album.photos)
        summary = html.escape(str(album.metadata.get("summary", "")))
        figures.append(f"<figure class='album' data-album-id='{html.escape(album.album_id)}'>"
                       f"<figcaption><b>{html.escape(album.album_id)}</b>: {summary}"
                       f"</figcaption><div class='photos'>{photos}</div></figure>")
    return "".join(figures) or "<p class='absent'>No synthetic album to show.</p>"


def _public_html(corpus: pd.DataFrame, n: int, px: int, rng: np.random.Generator) -> str:
    if corpus.empty:
        return "<p class='absent'>No public-corpus image to show.</p>"
    rows = corpus.iloc[sorted(rng.choice(len(corpus), size=min(n, len(corpus)),
                                         replace=False).tolist())]
    items = "".join(
        f"<figure class='public-sample'><img src='{png_data_uri(bytes(r.image))}' width='{px}' "
        f"height='{px}' alt='public image'><figcaption>{html.escape(str(r.caption))}"
        f"</figcaption></figure>" for r in rows.itertuples())
    return f"<div class='public'>{items}</div>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3;text-align:left}td.value{text-align:right;font-variant-numeric:tabular-nums}
.internal{background:#b00;color:#fff;font-size:.7em;padding:1px 6px;border-radius:3px}
.banner{background:#fff4e5;border:1px solid #e0a040;padding:.6em 1em}
.danger{background:#b00;color:#fff;font-size:1.2em;border-color:#700}
.absent{color:#777}.side{display:flex;gap:2em;align-items:flex-start}
.gallery{flex:3}.publicside{flex:1}
figure.album{border:1px solid #ddd;margin:0 0 1em;padding:.5em}
.photos{display:flex;flex-wrap:wrap;gap:6px}.photo{width:110px;font-size:.75em}
img{image-rendering:pixelated;display:block}
.public{display:flex;flex-wrap:wrap;gap:6px}figure.public-sample{margin:0;width:110px;
font-size:.75em}
td.mlflow{font-size:.8em}a.mlflow{color:#0a58ca}
"""

# Marks the page once every image decoded: a headless browser test reads these attributes.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-total', imgs.length);
  document.body.setAttribute('data-images-loaded', ok.length);
  document.querySelectorAll('figure.album').forEach(function (f) {
    var mine = Array.prototype.slice.call(f.querySelectorAll('img'));
    f.setAttribute('data-loaded', mine.filter(function (i) {
      return i.complete && i.naturalWidth > 0; }).length + '/' + mine.length);
  });
});
"""


def _plot_html(privacy_utility_plot: bytes | None, include_internal: bool) -> str:
    """The ε sweep's plot: internal report only (it draws internal metrics against ε)."""
    if not include_internal:
        return ("<p class='absent'>The privacy-utility plot draws internal metrics: it is left "
                "out of this released report.</p>")
    if not privacy_utility_plot:
        return "<p class='absent'>No privacy-utility plot yet: run scripts/epsilon_sweep.py.</p>"
    return (f"<img class='plot' src='{png_data_uri(bytes(privacy_utility_plot))}' "
            "alt='privacy-utility plot' style='image-rendering:auto;max-width:900px'>")


def _noise_banner(source: str) -> str:
    """The top-of-page warning when the ledger's noise is not known to be secret."""
    if source == "replayable":
        return (f"<p class='banner danger'><b>{html.escape(REPLAYABLE_WARNING)}</b>: anyone who "
                "knows the seed can regenerate and subtract the noise, so the ledger's ε does not "
                "hold. Never release this run's outputs.</p>")
    if source == "unknown":
        return ("<p class='banner'><b>Noise source unknown</b>: this ledger does not record "
                "whether the DP noise was secret or replayable from a seed (an older ledger). "
                "Check before releasing anything.</p>")
    return ""


def render_report(doc: dict[str, Any], ledger: dict[str, Any], synthetic_albums: AlbumSet,
                  public_corpus: pd.DataFrame, privacy_utility_plot: bytes | None,
                  config: Any, mlflow_links: MlflowLinks | None = None) -> str:
    """The self-contained report page (every image inlined as base64 PNG): synthetic albums
    beside public images first, then the models, ledger and metrics, each model and metric
    linked to its MLflow run (``mlflow_links``; None: no links)."""
    rng = np.random.default_rng(config.seed)
    include_internal = bool(config.include_internal_metrics)
    eps = _epsilon(ledger)
    title = f"dpalbum run report: ε = {'∞' if math.isinf(eps) else f'{eps:.3g}'}" + (
        " (NOT differentially private)" if noise_source(ledger) == "replayable" else "")
    banner = ("<p class='banner'>This report shows no private photo or text: the gallery holds "
              "synthetic albums and public-corpus images. Sections marked "
              "<span class='internal'>internal</span> are aggregate statistics computed from "
              "private data, <b>not covered by the privacy ledger</b>: keep this report inside "
              "the data team, or render it with include_internal_metrics: false to release it."
              "</p>") if include_internal else (
        "<p class='banner'>Released report: no private photo, text or internal metric.</p>")
    if math.isinf(eps):
        banner += ("<p class='banner'><b>NON-PRIVATE baseline (ε = ∞)</b>: never release "
                   "this run's synthetic data.</p>")
    banner = _noise_banner(noise_source(ledger)) + banner
    captioner = doc.get("captioner")  # public facts of the run's configuration
    if captioner:
        banner += (f"<p class='banner'>Album texts written by the "
                   f"{html.escape(captioner['captioner'])}"
                   + (f": <b>{html.escape(captioner['statement'])}</b>"
                      if captioner.get("out_of_domain") else "") + ".</p>")
    plot = _plot_html(privacy_utility_plot, include_internal)
    px = int(config.thumbnail_px)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="dpalbum-internal" content="{str(include_internal).lower()}">
<style>{_STYLE}</style></head>
<body data-images-total="0" data-images-loaded="0">
<h1>{html.escape(title)}</h1>
<p>From the run whose privacy plan was made at {html.escape(str(ledger.get('created_at', '')))}{
    "" if mlflow_links is None else "; MLflow run " + _link(mlflow_links.run_url(),
                                                             mlflow_links.run.run_id)}.</p>
{banner}
<div class="side">
<section class="gallery"><h2>Synthetic albums</h2>
{_gallery_html(synthetic_albums, config.n_gallery_albums, px, rng)}</section>
<section class="publicside"><h2>Public-corpus samples</h2>
<p class="absent">What the public data the models started from looks like (never a private
photo).</p>
{_public_html(public_corpus, config.n_public_samples, px, rng)}</section>
</div>
<h2>Models and their MLflow runs</h2>
{_models_html(mlflow_links)}
<h2>Privacy ledger</h2>
{_ledger_html(ledger)}
<h2>Metrics</h2>
{_metrics_html(doc, include_internal, mlflow_links)}
<h2>Privacy-utility trade-off</h2>
{plot}
<script>{_SCRIPT}</script>
</body></html>
"""
