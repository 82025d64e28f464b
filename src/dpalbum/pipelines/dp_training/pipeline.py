"""dp_training wiring: query → select public → tokenizer → pre-train → DP fine-tune → ledger.
``privacy_plan`` comes from the privacy_plan pipeline (run it first, or the whole default)."""

from kedro.pipeline import Node, Pipeline

from dpalbum.pipelines.dp_training import nodes as n

P, PRIV = "params:dp_training", "params:privacy"


def create_pipeline(**kwargs) -> Pipeline:
    """The text path's private training: every private read is planned and charged."""
    return Pipeline([
        Node(n.public_caption_labels_node, ["public_corpus", P],
             ["semantic_labeller", "public_semantic_labels"], name="public_caption_labels_node"),
        Node(n.semantic_query_node,
             ["album_texts", "semantic_labeller", "privacy_plan", "privacy_account", P, PRIV],
             ["semantic_histogram", "ledger_after_query"], name="semantic_query_node"),
        Node(n.select_public_node, ["public_semantic_labels", "semantic_histogram", P],
             "public_selection", name="select_public_node"),
        Node(n.public_album_texts_node,
             ["public_corpus", "public_selection", "semantic_histogram", P],
             "public_album_texts", name="public_album_texts_node"),
        Node(n.train_tokenizer_node, ["public_corpus", "public_album_texts", P], "lm_tokenizer",
             name="train_tokenizer_node"),
        Node(n.pretrain_summary_lm_node, ["public_album_texts", "lm_tokenizer", P],
             "summary_lm_pretrained", name="pretrain_summary_lm_node"),
        Node(n.pretrain_caption_lm_node, ["public_album_texts", "lm_tokenizer", P],
             "caption_lm_pretrained", name="pretrain_caption_lm_node"),
        Node(n.dp_finetune_summary_lm_node,
             ["summary_lm_pretrained", "lm_tokenizer", "album_texts", "ledger_after_query",
              "privacy_account", "public_album_texts", P, PRIV],
             ["summary_lm", "ledger_after_summary_lm", "summary_lm_history"],
             name="dp_finetune_summary_lm_node"),
        Node(n.dp_finetune_caption_lm_node,
             ["caption_lm_pretrained", "lm_tokenizer", "album_texts", "ledger_after_summary_lm",
              "privacy_account", "public_album_texts", P, PRIV],
             ["caption_lm", "ledger_after_caption_lm", "caption_lm_history"],
             name="dp_finetune_caption_lm_node"),
        Node(n.finalise_ledger_node,
             ["ledger_after_caption_lm", "summary_lm_history", "caption_lm_history"],
             # the text path's ledger; rendering charges the renderer's optional DP fine-tune
             # to it and releases the run's ledger as privacy_ledger
             ["text_privacy_ledger", "privacy_metrics", "dp_training_history"],
             name="finalise_ledger_node"),
    ])
