"""Nodes of the ``evaluation`` pipeline: each computes one section of the metrics.

A section is a dict made by ``report.section``: its metrics, whether it read private data
(``internal``) and, when an input it needs is empty, ``absent`` with the reason instead of numbers.
The maths lives in ``metrics.py`` and ``audit.py``; these functions only gather inputs.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from dpalbum.albums.dataset import AlbumReader
from dpalbum.albums.model import AlbumSet
from dpalbum.albums.vocabulary import parse_caption
from dpalbum.models.album_description import describe_albums
from dpalbum.models.captioner import AlbumSource, CaptionerConfig
from dpalbum.models.evaluation_network import (
    EvaluationNetwork,
    EvaluationNetworkConfig,
    clip_image_features,
    inception_extractor,
    to_uint8_batch,
    train_evaluation_network,
)
from dpalbum.models.summariser import SummariserConfig
from dpalbum.models.text_encoder import encode_texts
from dpalbum.pipelines.evaluation import audit, metrics, report
from dpalbum.pipelines.evaluation.config import (
    HeldoutTextsConfig,
    ImageFidelityConfig,
    MembershipConfig,
    ReportConfig,
    TextMetricsConfig,
    TrackingConfig,
    UtilityConfig,
)

logger = logging.getLogger(__name__)


# ---- helpers: albums to arrays and labels -------------------------------------------------------

def _photos(albums: AlbumSet) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Every photo's pixels, album id and caption ("" when it has none), in album order."""
    images, ids, captions = [], [], []
    for album in albums:
        for photo in album.photos:
            images.append(photo.image)
            ids.append(album.album_id)
            captions.append(photo.caption or "")
    return images, ids, captions


def _image_features(images: list[np.ndarray], network: EvaluationNetwork,
                    config: ImageFidelityConfig) -> np.ndarray:
    """Features of RGB arrays from the evaluation network, or Inception / CLIP when configured."""
    if config.image_features == "local":
        return network.embed(images)
    if config.image_features == "clip":
        return clip_image_features(config.clip_model_name_or_path, config.device)(images)
    extractor = inception_extractor(config.inception_weights_path or "")
    batches = [extractor(to_uint8_batch(images[i:i + 64], images[i].shape[0])).detach().numpy()
               for i in range(0, len(images), 64)]
    return np.concatenate(batches).reshape(len(images), -1)


def _album_means(features: np.ndarray, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """Mean feature per album (first-seen order) and the album ids."""
    frame = pd.DataFrame(features).groupby(pd.Series(ids, name="album_id"), sort=False).mean()
    return frame.to_numpy(), list(frame.index)


def _truth_labels(ground_truth: pd.DataFrame, split: str) -> pd.DataFrame:
    """Per-album event and protagonist of one ground-truth split (index album_id)."""
    rows = ground_truth[ground_truth["split"] == split]
    albums = rows.groupby("album_id", sort=False).first()
    return pd.DataFrame({"event": albums["event"],
                         "protagonist": albums["colour"] + " " + albums["shape"]})


def _text_album_labels(summary: str, captions: list[str]) -> dict[str, str | None]:
    """An album's event (from its summary) and protagonist (summary, else most common caption's)."""
    parsed = parse_caption(summary or "")
    protagonist = metrics.protagonist_of(parsed)
    if protagonist == metrics.UNPARSED:
        named = [metrics.protagonist_of(parse_caption(c)) for c in captions]
        named = [p for p in named if p != metrics.UNPARSED]
        protagonist = Counter(named).most_common(1)[0][0] if named else metrics.UNPARSED
    return {"event": parsed["event"],
            "protagonist": None if protagonist == metrics.UNPARSED else protagonist}


def _truth_photo_attrs(ground_truth: pd.DataFrame, split: str) -> list[dict[str, Any]]:
    rows = ground_truth[ground_truth["split"] == split]
    return [{"scene": r.scene, "colour": r.colour, "shape": r.shape,
             "objects": str(r.objects).split()} for r in rows.itertuples()]


def _no_ground_truth(ground_truth: pd.DataFrame | None) -> bool:
    return ground_truth is None or ground_truth.empty


def _ground_truth_absent(name: str) -> dict[str, Any]:
    """The section of a metric that needs the demo world's ground truth, on data without one."""
    logger.warning("%s skipped: no ground truth (real data has none; only the demo world "
                   "writes data/01_raw/ground_truth.parquet)", name)
    return report.missing_input(name, "ground_truth",
                                "only the demo world has per-photo ground-truth labels")


def _not_demo_vocabulary(name: str, why: str) -> dict[str, Any]:
    """A section measured in the demo world's vocabulary, on albums that are not the demo world's:
    its numbers would look healthy on nonsense, so it is not reported."""
    logger.warning("%s not reported: %s", name, why)
    return report.section(name, internal=name != "caption_agreement",
                          absent=f"not available: {why}",
                          notes={"missing_input": "demo_world_albums"})


def _covered(ids: list[str], truth: pd.DataFrame) -> list[int]:
    """Positions of the album ids the ground truth covers (by album id)."""
    return [i for i, a in enumerate(ids) if a in truth.index]


def _captions(texts: pd.DataFrame) -> list[str]:
    return [str(c) for captions in texts["captions"] for c in captions]


# ---- the evaluation network ---------------------------------------------------------------------

def train_evaluation_network_node(public_corpus: pd.DataFrame,
                                  network: EvaluationNetworkConfig) -> EvaluationNetwork:
    """Train the evaluation feature extractor and attribute classifier on PUBLIC images only."""
    return train_evaluation_network(public_corpus, network)


def evaluation_network_report_node(evaluation_network: EvaluationNetwork) -> dict[str, Any]:
    """The evaluation network's accuracy on public held-out images (released: public data only)."""
    accuracy = evaluation_network.training_report.get("public_heldout")
    if not accuracy:
        return report.section("evaluation_network", internal=False,
                              absent="the network was trained without public held-out images")
    return report.section("evaluation_network", internal=False, metrics=accuracy)


# ---- fidelity -----------------------------------------------------------------------------------

def image_fidelity_node(synthetic_albums: AlbumSet, heldout_albums: AlbumSet,
                        evaluation_network: EvaluationNetwork,
                        image_fidelity: ImageFidelityConfig) -> dict[str, Any]:
    """Local FD (or FID), KID and k-NN precision/recall: synthetic vs held-out private photos."""
    fake, _, _ = _photos(synthetic_albums)
    real, _, _ = _photos(heldout_albums)
    need = image_fidelity.k + 1
    if min(len(fake), len(real)) < need:
        return report.section("image_fidelity", internal=True, absent=(
            f"needs {need}+ photos on each side: {len(fake)} synthetic, {len(real)} held-out"))
    values = metrics.image_fidelity(
        _image_features(real, evaluation_network, image_fidelity),
        _image_features(fake, evaluation_network, image_fidelity), image_fidelity.k,
        image_fidelity.kid_subsets, image_fidelity.kid_subset_size, image_fidelity.seed)
    values[image_fidelity.fd_name] = values.pop("fd")
    values |= {"n_real": float(len(real)), "n_synthetic": float(len(fake))}
    return report.section("image_fidelity", internal=True, metrics=values,
                          notes={"features": image_fidelity.image_features})


def text_fidelity_node(curated_texts: pd.DataFrame, album_texts: pd.DataFrame,
                       text_fidelity: TextMetricsConfig,
                       album_source: AlbumSource, captioner: CaptionerConfig) -> dict[str, Any]:
    """Fréchet distance and MAUVE on MiniLM features: synthetic vs private summaries, captions
    (not reported when the album texts are the embedded captioner's, out of domain)."""
    if album_source.provenance(captioner)["out_of_domain"]:
        return _not_demo_vocabulary("text_fidelity", (
            "both sides are texts in the demo world's vocabulary written by the embedded "
            "captioner, which is out of domain for these albums"))
    values: dict[str, float] = {}
    missing = []
    pairs = {"summary": (list(album_texts["summary"]), list(curated_texts["summary"])),
             "caption": (_captions(album_texts), _captions(curated_texts))}
    for kind, (real, fake) in pairs.items():
        if min(len(real), len(fake)) < 2:
            missing.append(f"{kind}: {len(fake)} synthetic, {len(real)} private texts")
            continue
        real_f = encode_texts(real, text_fidelity.text_encoder)
        fake_f = encode_texts(fake, text_fidelity.text_encoder)
        found = metrics.text_fidelity(real_f, fake_f, text_fidelity.max_samples,
                                      text_fidelity.seed)
        values |= {f"{kind}_{k}": v for k, v in found.items()}
        values[f"n_{kind}_synthetic"] = float(len(fake))
    real_topics = [parse_caption(str(t))["event"] for t in album_texts["summary"]]
    if len(curated_texts) and sum(t is not None for t in real_topics) >= len(real_topics) / 2:
        fake_topics = [parse_caption(str(t))["event"] for t in curated_texts["summary"]]
        values |= {f"summary_{k}": v
                   for k, v in metrics.topic_gap(real_topics, fake_topics).items()}
    else:  # summaries that name no event of the vocabulary: no topic to compare
        missing.append("summary topics: under half the private summaries name a known event")
    if not values:
        return report.section("text_fidelity", internal=True,
                              absent="needs 2+ texts per side; " + "; ".join(missing))
    return report.section("text_fidelity", internal=True, metrics=values,
                          notes={"absent": missing} if missing else None)


# ---- coherence and the demo world ---------------------------------------------------------------

def _coherence(images: list[np.ndarray], photo_ids: list[str], captions: list[str],
               caption_ids: list[str], network: EvaluationNetwork,
               config: TextMetricsConfig) -> dict[str, float]:
    values: dict[str, float] = {}
    if len(set(photo_ids)) >= 2 and len(images) > len(set(photo_ids)):
        found = metrics.album_coherence(network.embed(images), photo_ids)
        values |= {f"photo_{k}": v for k, v in found.items()}
    if len(set(caption_ids)) >= 2 and len(captions) > len(set(caption_ids)):
        found = metrics.album_coherence(encode_texts(captions, config.text_encoder), caption_ids)
        values |= {f"caption_{k}": v for k, v in found.items()}
    return values


def album_coherence_node(synthetic_albums: AlbumSet, evaluation_network: EvaluationNetwork,
                         text_metrics: TextMetricsConfig) -> dict[str, Any]:
    """Within- vs between-album similarity of synthetic photos and captions (released data only)."""
    images, ids, captions = _photos(synthetic_albums)
    named = [(c, i) for c, i in zip(captions, ids) if c]
    values = _coherence(images, ids, [c for c, _ in named], [i for _, i in named],
                        evaluation_network, text_metrics)
    if not values:
        return report.section("album_coherence", internal=False,
                              absent="needs 2+ synthetic albums with 2+ photos")
    return report.section("album_coherence", internal=False, metrics=values)


def private_coherence_node(heldout_albums: AlbumSet, album_texts: pd.DataFrame,
                           evaluation_network: EvaluationNetwork,
                           text_metrics: TextMetricsConfig) -> dict[str, Any]:
    """The same coherence on private albums: the reference synthetic albums should approach."""
    images, ids, _ = _photos(heldout_albums)
    caption_ids = [str(a) for a, cs in zip(album_texts["album_id"], album_texts["captions"])
                   for _ in cs]
    values = _coherence(images, ids, _captions(album_texts), caption_ids, evaluation_network,
                        text_metrics)
    if not values:
        return report.section("private_coherence", internal=True,
                              absent="needs 2+ private albums with 2+ photos")
    return report.section("private_coherence", internal=True, metrics=values,
                          notes={"photos": "held-out albums", "captions": "training albums"})


def caption_agreement_node(synthetic_albums: AlbumSet, evaluation_network: EvaluationNetwork,
                           album_source: AlbumSource) -> dict[str, Any]:
    """Demo world: does each rendered photo show its caption's scene and protagonist?"""
    if not album_source.demo_world:
        return _not_demo_vocabulary("caption_agreement", (
            "measured in the demo world's vocabulary (captions parsed with it, photos labelled "
            "by the demo-world evaluation network), and these albums are not the demo world's"))
    images, ids, captions = _photos(synthetic_albums)
    if not images:
        return report.section("caption_agreement", internal=False, absent="no synthetic photos")
    values = metrics.caption_agreement(evaluation_network.predict(images),
                                       [parse_caption(c) for c in captions], ids)
    return report.section("caption_agreement", internal=False, metrics=values)


def attribute_fidelity_node(curated_texts: pd.DataFrame, synthetic_albums: AlbumSet,
                            ground_truth: pd.DataFrame | None,
                            evaluation_network: EvaluationNetwork,
                            album_texts: pd.DataFrame) -> dict[str, Any]:
    """TV distance of scene/protagonist/object labels: synthetic texts and photos vs private
    (over the private albums the ground truth covers, matched by album id)."""
    if _no_ground_truth(ground_truth):
        return _ground_truth_absent("attribute_fidelity")
    private_ids = {str(a) for a in album_texts["album_id"]}
    in_truth = set(map(str, ground_truth.loc[ground_truth["split"] == "train", "album_id"]))
    uncovered = len(private_ids - in_truth)
    ground_truth = ground_truth[(ground_truth["split"] != "train")
                                | ground_truth["album_id"].astype(str).isin(private_ids)]
    private = _truth_photo_attrs(ground_truth, "train")
    if not private:
        return report.section("attribute_fidelity", internal=True, absent=(
            f"not available: the ground truth covers none of the {len(private_ids)} private "
            "albums"), notes={"missing_input": "ground_truth",
                              "albums_without_ground_truth": uncovered})
    values: dict[str, float] = {}
    captions = _captions(curated_texts)
    if captions:
        text = metrics.attribute_tv(private, [parse_caption(c) for c in captions])
        values |= {f"text_{k}": v for k, v in text.items()}
        truth_events = _truth_labels(ground_truth, "train")["event"]
        text_events = [parse_caption(s)["event"] or metrics.UNPARSED
                       for s in curated_texts["summary"]]
        values["text_tv_event"] = metrics.total_variation(Counter(truth_events),
                                                          Counter(text_events))
    images, _, _ = _photos(synthetic_albums)
    if images:
        found = metrics.attribute_tv(private, evaluation_network.predict(images))
        values |= {f"image_{k}": v for k, v in found.items()}
    heldout = _truth_photo_attrs(ground_truth, "heldout")
    if heldout:  # two samples of the same private distribution: the floor TV can reach
        values |= {f"floor_{k}": v for k, v in metrics.attribute_tv(private, heldout).items()}
    if not (captions or images):
        return report.section("attribute_fidelity", internal=True,
                              absent="no synthetic captions and no synthetic photos")
    return report.section("attribute_fidelity", internal=True, metrics=values,
                          notes={"albums_without_ground_truth": uncovered} if uncovered else None)


# ---- utility: train on synthetic, test on held-out real -----------------------------------------

def utility_node(synthetic_albums: AlbumSet, private_albums: AlbumSet, heldout_albums: AlbumSet,
                 ground_truth: pd.DataFrame | None, evaluation_network: EvaluationNetwork,
                 utility: UtilityConfig) -> dict[str, Any]:
    """TSTR: album-theme/protagonist classifiers on synthetic vs real training albums, tested on
    held-out private albums (hyper-parameters chosen by CV on the training side only)."""
    if _no_ground_truth(ground_truth):
        return _ground_truth_absent("utility")

    def album_features(albums: AlbumSet) -> tuple[np.ndarray, list[str]]:
        images, ids, _ = _photos(albums)
        return _album_means(evaluation_network.embed(images), ids)

    syn_x, syn_ids = album_features(synthetic_albums)
    syn_labels = {a.album_id: _text_album_labels(a.metadata.get("summary", ""),
                                                 [p.caption or "" for p in a.photos])
                  for a in synthetic_albums}
    truth = pd.concat([_truth_labels(ground_truth, split) for split in ("train", "heldout")])
    real_x, real_ids = album_features(private_albums)
    test_x, test_ids = album_features(heldout_albums)
    # only albums the ground truth covers have labels; the others are counted, never looked up
    keep_real, keep_test = _covered(real_ids, truth), _covered(test_ids, truth)
    uncovered = {"training": len(real_ids) - len(keep_real),
                 "heldout": len(test_ids) - len(keep_test)}
    if uncovered["training"] or uncovered["heldout"]:
        logger.warning("utility: %d training and %d held-out albums have no ground truth: left "
                       "out", uncovered["training"], uncovered["heldout"])
    real_x, real_ids = real_x[keep_real], [real_ids[i] for i in keep_real]
    test_x, test_ids = test_x[keep_test], [test_ids[i] for i in keep_test]
    values: dict[str, float] = {}
    absent: list[str] = []
    for task in utility.tasks:
        keep = [i for i, a in enumerate(syn_ids) if syn_labels[a][task]]
        syn_y = [syn_labels[syn_ids[i]][task] for i in keep]
        if len(set(syn_y)) < 2 or len(real_ids) < 2 or not test_ids:
            absent.append(f"{task}: {len(set(syn_y))} synthetic classes in {len(keep)} labelled "
                          f"albums, {len(real_ids)} real, {len(test_ids)} held-out albums")
            continue
        found = metrics.tstr((syn_x[keep], syn_y),
                             (real_x, list(truth.loc[real_ids, task])),
                             (test_x, list(truth.loc[test_ids, task])), utility.seed)
        found["synthetic_unlabelled"] = float(len(syn_ids) - len(keep))
        values |= {f"{task}_{k}": v for k, v in found.items()}
    notes = {"albums_without_ground_truth": uncovered} if any(uncovered.values()) else {}
    if not values:
        return report.section("utility", internal=True,
                              absent="not available: " + "; ".join(absent),
                              notes={**notes, "missing_input": "ground_truth"} if notes else None)
    return report.section("utility", internal=True, metrics=values,
                          notes={**notes, "absent": absent} if absent else notes or None)


# ---- privacy audit (internal) -------------------------------------------------------------------

def caption_heldout_albums_node(heldout_albums_for_captioner: AlbumReader, captioner_model: Any,
                                privacy_ledger: dict[str, Any], heldout_texts: HeldoutTextsConfig,
                                summariser: SummariserConfig) -> pd.DataFrame:
    """Held-out album texts made exactly like the training ones (same captioner, photos decoded
    at its own input size, same summariser).

    ``privacy_ledger`` is an input only to order the run: evaluation reads private photos after
    the DP mechanisms were planned, run and recorded.
    """
    albums = heldout_albums_for_captioner.read(captioner_model.input_size)
    return describe_albums(albums, captioner_model, heldout_texts, summariser)


def _capped(texts: pd.DataFrame, cap: int | None, seed: int) -> pd.DataFrame:
    if cap is None or len(texts) <= cap:
        return texts
    return texts.sample(n=cap, random_state=seed)


def membership_inference_node(summary_lm: Any, caption_lm: Any, lm_tokenizer: Any,
                              album_texts: pd.DataFrame, heldout_album_texts: pd.DataFrame,
                              privacy_ledger: dict[str, Any],
                              membership: MembershipConfig) -> dict[str, Any]:
    """Loss-threshold membership inference on both LMs: training albums vs held-out albums."""
    members = _capped(album_texts, membership.max_albums, membership.seed)
    nonmembers = _capped(heldout_album_texts, membership.max_albums, membership.seed)
    if min(len(members), len(nonmembers)) < 2:
        return report.section("membership_inference", internal=True, absent=(
            f"needs 2+ member and non-member albums: {len(members)} and {len(nonmembers)}"))
    delta = float(privacy_ledger.get("delta", 1e-5))
    values: dict[str, float] = {}
    for role, model in (("summary_lm", summary_lm), ("caption_lm", caption_lm)):
        kind = role.split("_")[0]
        losses = [audit.album_losses(model, lm_tokenizer, texts, kind, membership.max_length,
                                     membership.batch_size) for texts in (members, nonmembers)]
        found = audit.membership_inference(losses[0], losses[1], delta)
        found["verbatim_ceiling_auc"] = audit.verbatim_ceiling_auc(
            audit.album_text_units(members, kind), audit.album_text_units(nonmembers, kind))
        values |= {f"{role}_{k}": v for k, v in found.items()}
    return report.section("membership_inference", internal=True, metrics=values,
                          notes={"claimed_epsilon": privacy_ledger.get("epsilon")})


# ---- metrics out, report out --------------------------------------------------------------------

def collect_metrics_node(
    privacy_ledger: dict[str, Any], album_source: AlbumSource, captioner: CaptionerConfig,
    *sections: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, dict[str, float]]]:
    """metrics.json (internal: every section), released_metrics.json and the released MLflow
    metrics (privacy tags are the hook's: one writer, ``dpalbum.privacy.ledger_tags``); both
    documents name the captioner and whether its texts are out of domain."""
    document = report.assemble_metrics(privacy_ledger, list(sections),
                                       album_source.provenance(captioner))
    released = report.released_metrics(document)
    return document, released, report.mlflow_metrics(released)


def internal_metrics_node(evaluation_metrics: dict[str, Any],
                          tracking: TrackingConfig) -> dict[str, dict[str, float]]:
    """The internal metrics for the internal child MLflow run, or none (``tracking`` switch)."""
    if tracking.internal_metrics_to_mlflow == "none":
        return {}
    return report.internal_mlflow_metrics(evaluation_metrics)


def build_report_node(evaluation_metrics: dict[str, Any], privacy_ledger: dict[str, Any],
                      synthetic_albums: AlbumSet, public_corpus: pd.DataFrame,
                      privacy_utility_plot: bytes | None, report_config: ReportConfig) -> str:
    """report.html: synthetic gallery beside public samples, models, ledger, metrics, the
    privacy-utility plot; models and metrics linked to their MLflow runs (when one is active)."""
    return report.render_report(evaluation_metrics, privacy_ledger, synthetic_albums,
                                public_corpus, privacy_utility_plot, report_config,
                                report.active_mlflow_links(report_config.mlflow_ui_url))
