"""Wiring of the ``evaluation`` pipeline: metric sections in parallel, then metrics and report.

Every section node reads only what its metric needs, so a section runs (and is tested) on its
own; ``collect_metrics_node`` gathers them into metrics.json (internal), released_metrics.json
and the released MLflow metrics; ``internal_metrics_node`` routes internal ones to the internal
experiment.
"""

from __future__ import annotations

from collections.abc import Callable

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.evaluation import nodes, privacy_audit

P = "params:evaluation"

# (section output, node function, inputs): one metrics section each.
SECTIONS: list[tuple[str, Callable[..., dict], list[str]]] = [
    ("evaluation_network_section", nodes.evaluation_network_report_node, ["evaluation_network"]),
    ("image_fidelity_section", nodes.image_fidelity_node,
     ["synthetic_albums", "heldout_albums", "evaluation_network", f"{P}.image_fidelity"]),
    ("text_fidelity_section", nodes.text_fidelity_node,
     ["curated_texts", "album_texts", f"{P}.text_metrics", "params:album_source",
      "params:captioning.captioner"]),
    ("album_coherence_section", nodes.album_coherence_node,
     ["synthetic_albums", "evaluation_network", f"{P}.text_metrics"]),
    ("private_coherence_section", nodes.private_coherence_node,
     ["heldout_albums", "album_texts", "evaluation_network", f"{P}.text_metrics"]),
    ("caption_agreement_section", nodes.caption_agreement_node,
     ["synthetic_albums", "evaluation_network", "params:album_source"]),
    ("attribute_fidelity_section", nodes.attribute_fidelity_node,
     ["curated_texts", "synthetic_albums", "ground_truth", "evaluation_network", "album_texts"]),
    ("utility_section", nodes.utility_node,
     ["synthetic_albums", "private_albums", "heldout_albums", "ground_truth",
      "evaluation_network", f"{P}.utility"]),
    ("membership_inference_section", nodes.membership_inference_node,
     ["summary_lm", "caption_lm", "lm_tokenizer", "album_texts", "heldout_album_texts",
      "privacy_ledger", f"{P}.membership"]),
    ("privacy_audit_section", privacy_audit.privacy_audit_node,
     ["audit_lms", "audit_canaries", "album_texts", "heldout_album_texts", "lm_tokenizer",
      "params:sampling", f"{P}.privacy_audit"]),
]


def create_pipeline(**kwargs) -> Pipeline:
    """Evaluation network, metric sections, metrics documents + MLflow, report.html."""
    return Pipeline(
        [
            Node(nodes.train_evaluation_network_node,
                 inputs=["public_corpus", f"{P}.network"], outputs="evaluation_network",
                 name="train_evaluation_network_node"),
            Node(nodes.caption_heldout_albums_node,
                 inputs=["heldout_albums_for_captioner", "captioner_model", "privacy_ledger",
                         f"{P}.heldout_texts", "params:captioning.summariser"],
                 outputs="heldout_album_texts", name="caption_heldout_albums_node"),
            # the insertion audit (off unless evaluation.privacy_audit.enabled): canaries join
            # a copy of the private texts, audit LMs are trained in memory, never released
            Node(privacy_audit.plant_canaries_node,
                 inputs=["album_texts", "public_corpus", f"{P}.privacy_audit"],
                 outputs=["audit_canaries", "audit_training_texts"],
                 name="plant_canaries_node"),
            Node(privacy_audit.train_audit_lms_node,
                 inputs=["audit_training_texts", "public_album_texts", "lm_tokenizer",
                         "params:privacy", "params:dp_training", f"{P}.privacy_audit"],
                 outputs="audit_lms", name="train_audit_lms_node"),
            *[Node(func, inputs=inputs, outputs=output, name=func.__name__)
              for output, func, inputs in SECTIONS],
            Node(nodes.collect_metrics_node,
                 inputs=["privacy_ledger", "params:album_source", "params:captioning.captioner",
                         *[output for output, _, _ in SECTIONS]],
                 outputs=["evaluation_metrics", "released_metrics", "evaluation_mlflow_metrics"],
                 name="collect_metrics_node"),
            Node(nodes.internal_metrics_node,
                 inputs=["evaluation_metrics", f"{P}.tracking"],
                 outputs="evaluation_internal_mlflow_metrics", name="internal_metrics_node"),
            Node(nodes.build_report_node,
                 inputs=["evaluation_metrics", "privacy_ledger", "synthetic_albums",
                         "public_corpus", "privacy_utility_plot", f"{P}.report"],
                 outputs="evaluation_report", name="build_report_node"),
        ]
    )
