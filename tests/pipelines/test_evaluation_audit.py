"""The privacy audit: membership inference must find members of an overfit (non-private) model
(the audit has power) and nothing in an untrained one; the insertion audit plants canaries only
in an audit run, trains on them under its own plan, finds memorised canaries and counts their
verbatim regenerations (none for canaries never trained on)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from dpalbum.albums.vocabulary import COLOURS, EVENTS, OBJECTS, SCENES, SHAPES
from dpalbum.models.language_model import caption_rows, encode_rows, row_losses, summary_rows
from dpalbum.models.sampler import SamplingConfig
from dpalbum.pipelines.evaluation import audit, nodes
from dpalbum.pipelines.evaluation import privacy_audit as nodes_audit
from dpalbum.pipelines.evaluation.config import MembershipConfig, PrivacyAuditConfig
from tests.pipelines.test_evaluation_world import ledger

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]")
DEMO_WORDS = ("a", "an", "in", "the", "with", "and", "album", "of", *COLOURS, *SHAPES, *SCENES,
              *OBJECTS, *{w for e in EVENTS for w in e.split()})
RANDOM_WORDS = tuple(f"w{i:03d}" for i in range(120))


def word_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(SPECIALS + DEMO_WORDS + RANDOM_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="[BOS]",
                                   eos_token="[EOS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]")


def tiny_lm(tokenizer, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=48, n_embd=32, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)).eval()


def train(model, tokenizer, rows, steps: int, seed: int = 0):
    """Non-private training on the rows (the control an audit must catch)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(rows.texts), (16,), generator=generator).tolist()
        starts = None if rows.loss_start is None else [rows.loss_start[i] for i in idx]
        batch = encode_rows(tokenizer, [rows.texts[i] for i in idx], starts, 48)
        loss = row_losses(model, batch).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


def random_albums(n: int, seed: int, prefix: str) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = lambda k: " ".join(rng.choice(RANDOM_WORDS, k))  # noqa: E731
    return pd.DataFrame({"album_id": [f"{prefix}_{i}" for i in range(n)],
                         "summary": [words(4) for _ in range(n)],
                         "captions": [[words(4), words(4)] for _ in range(n)]})


@functools.lru_cache(maxsize=1)
def membership_setup():
    torch.set_num_threads(1)
    tokenizer = word_tokenizer()
    members, nonmembers = random_albums(24, 0, "album"), random_albums(24, 1, "heldout")
    overfit = {"summary": train(tiny_lm(tokenizer, 0), tokenizer,
                                summary_rows(members, tokenizer), 150),
               "caption": train(tiny_lm(tokenizer, 1), tokenizer,
                                caption_rows(members, tokenizer), 150)}
    untrained = {"summary": tiny_lm(tokenizer, 2), "caption": tiny_lm(tokenizer, 3)}
    return tokenizer, members, nonmembers, overfit, untrained


def test_album_losses_one_value_per_album_and_caption_loss_on_caption_only():
    tokenizer, members, _, overfit, _ = membership_setup()
    losses = audit.album_losses(overfit["caption"], tokenizer, members, "caption")
    assert list(losses.index) == list(members["album_id"]) and losses.notna().all()
    # the caption LM is scored on captions only: changing a summary's words it never predicts
    # changes the conditioning, not which tokens are scored, so the loss stays finite and close
    changed = members.assign(summary=["w000 w001"] * len(members))
    other = audit.album_losses(overfit["caption"], tokenizer, changed, "caption")
    assert np.isfinite(other).all()
    with pytest.raises(ValueError, match="role"):
        audit.album_losses(overfit["caption"], tokenizer, members, "photo")


def test_membership_inference_has_power_on_an_overfit_model():
    tokenizer, members, nonmembers, overfit, _ = membership_setup()
    for role in ("summary", "caption"):
        found = audit.membership_inference(
            audit.album_losses(overfit[role], tokenizer, members, role),
            audit.album_losses(overfit[role], tokenizer, nonmembers, role))
        assert found["auc"] >= 0.9, (role, found)
        assert found["tpr_at_1pct_fpr"] > 0.3
        assert found["epsilon_lower_bound"] > 0.5


def test_membership_inference_finds_nothing_in_an_untrained_model():
    tokenizer, members, nonmembers, _, untrained = membership_setup()
    found = audit.membership_inference(
        audit.album_losses(untrained["summary"], tokenizer, members, "summary"),
        audit.album_losses(untrained["summary"], tokenizer, nonmembers, "summary"))
    assert 0.25 < found["auc"] < 0.75
    assert found["epsilon_lower_bound"] < 1.0


def test_membership_metrics_on_known_scores():
    members, nonmembers = np.arange(100) / 100.0, np.arange(100) / 100.0 + 10  # perfectly split
    found = audit.membership_inference(members, nonmembers)
    assert found["auc"] == 1.0 and found["tpr_at_1pct_fpr"] == 1.0
    # 100 vs 100 with no error: CP bounds give TPR >= 0.964, FPR <= 0.036 -> eps >= ~3.3
    assert 3.0 < found["epsilon_lower_bound"] < 3.6
    same = audit.membership_inference(members, members)
    assert same["auc"] == 0.5 and same["epsilon_lower_bound"] == 0.0


def test_membership_node_reports_both_models(monkeypatch):
    tokenizer, members, nonmembers, overfit, _ = membership_setup()
    section = nodes.membership_inference_node(overfit["summary"], overfit["caption"], tokenizer,
                                              members, nonmembers, ledger(), MembershipConfig())
    assert section["internal"] and section["absent"] is None
    assert section["metrics"]["summary_lm_auc"] > 0.9
    assert section["metrics"]["caption_lm_auc"] > 0.9
    empty = nodes.membership_inference_node(overfit["summary"], overfit["caption"], tokenizer,
                                            members, nonmembers.iloc[:0], ledger(),
                                            MembershipConfig())
    assert empty["metrics"] == {} and "non-member" in empty["absent"]


def test_verbatim_regenerations_counts_case_and_spacing_insensitive():
    found = audit.verbatim_regenerations(
        ["w001 w002 w003", "W001  w002 w003", "w004 w005", "a red circle"],
        secret_texts=["w001 w002 w003", "w009 w008"])
    assert found == {"hits": 2.0, "distinct": 1.0}
    assert audit.verbatim_regenerations([], ["w001"]) == {"hits": 0.0, "distinct": 0.0}


def test_verbatim_ceiling_auc_bounds_attacks_on_repeated_texts():
    members = [["a red circle", "a red circle in the city"], ["a blue square"]]
    assert audit.verbatim_ceiling_auc(members, [["a red circle"], ["a blue square"]]) == 0.5
    assert audit.verbatim_ceiling_auc(members, [["w001"], ["w002 w003"]]) == 1.0
    assert audit.verbatim_ceiling_auc(members, [["a red circle", "w001"], ["a blue square"]]) \
        == 0.75
    texts = pd.DataFrame({"album_id": ["a"], "summary": ["s"], "captions": [["c1", "c2"]]})
    assert audit.album_text_units(texts, "summary") == [["s"]]
    assert audit.album_text_units(texts, "caption") == [["s || c1", "s || c2"]]


def test_canary_texts_are_seeded_unique_strings_of_public_words():
    words = audit.canary_words(["a red circle in the city", "A blue square, 2 kites"])
    assert words == sorted(set(words)) and "2" not in words and "square," not in words
    canaries = audit.canary_album_texts(words, 30, 3, 8, seed=5)
    texts = list(canaries["summary"]) + [c for cs in canaries["captions"] for c in cs]
    assert len(set(texts)) == len(texts) == 120
    assert all(len(t.split()) == 8 and set(t.split()) <= set(words) for t in texts)
    assert canaries.equals(audit.canary_album_texts(words, 30, 3, 8, seed=5))
    assert not canaries.equals(audit.canary_album_texts(words, 30, 3, 8, seed=6))
    one_secret = audit.canary_album_texts(words, 5, 4, 8, seed=5, distinct_captions=1)
    assert all(len(set(cs)) == 1 and len(cs) == 4 for cs in one_secret["captions"])
    with pytest.raises(ValueError, match="distinct_captions"):
        audit.canary_album_texts(words, 5, 4, 8, seed=5, distinct_captions=5)


def _audit_config(**changes) -> PrivacyAuditConfig:
    values = dict(enabled=True, n_inserted_canaries=4, n_heldout_canaries=4,
                  captions_per_canary=2, words_per_text=4, n_samples=40, captions_per_album=4)
    return PrivacyAuditConfig(**(values | changes))


def _public_corpus() -> pd.DataFrame:
    return pd.DataFrame({"caption": [f"a {c} {s} in the {p}" for c in COLOURS for s in SHAPES
                                     for p in SCENES]})


def test_plant_canaries_only_in_an_audit_run_and_only_the_inserted_ones():
    _, members, _, _, _ = membership_setup()
    off_canaries, off_training = nodes_audit.plant_canaries_node(
        members, _public_corpus(), PrivacyAuditConfig())
    assert off_canaries.empty and off_training.empty
    canaries, training = nodes_audit.plant_canaries_node(members, _public_corpus(),
                                                         _audit_config())
    inserted = canaries[canaries["inserted"]]
    assert len(inserted) == 4 and (~canaries["inserted"]).sum() == 4
    assert list(training["album_id"]) == [*members["album_id"], *inserted["album_id"]]
    assert not set(canaries.loc[~canaries["inserted"], "album_id"]) & set(training["album_id"])
    assert list(training.columns) == list(members.columns)


def test_audit_lms_are_trained_on_the_canaries_under_their_own_plan():
    """A tiny real audit run: plan over N + canaries, DP-SGD on both LMs, public reference kept."""
    from tests.pipelines.test_dp_training import private_album_texts, tiny_params

    torch.set_num_threads(1)
    dp_training, privacy_params = tiny_params()
    tokenizer = word_tokenizer()
    for role in ("summary_lm", "caption_lm"):
        dp_training[role]["model"]["n_positions"] = 48
        dp_training[role]["pretrain"]["max_length"] = 48
    members = private_album_texts(24)
    canaries, training = nodes_audit.plant_canaries_node(members, _public_corpus(),
                                                         _audit_config())
    public = private_album_texts(16, seed=1)  # stands in for public pseudo-albums
    lms = nodes_audit.train_audit_lms_node(training, public, tokenizer, privacy_params,
                                           dp_training, _audit_config())
    charged = {m["name"]: m for m in lms["ledger"]["mechanisms"] if m.get("status") == "spent"}
    assert set(charged) == {"summary_lm", "caption_lm"}
    for role in charged:  # q = expected batch / (N private + inserted canaries)
        assert charged[role]["sample_rate"] == pytest.approx(8 / 28)
        assert charged[role]["noise_multiplier"] > 0
        tuned = dict(lms["models"][role].named_parameters())
        reference = dict(lms["models"][f"{role}_reference"].named_parameters())
        assert set(tuned) == set(reference)  # LoRA merged back into the public architecture
        assert any(not torch.equal(tuned[k], reference[k]) for k in tuned)
    assert nodes_audit.train_audit_lms_node(training, public, tokenizer, privacy_params,
                                            dp_training, PrivacyAuditConfig()) == {}


def test_audit_finds_memorised_canaries_and_counts_their_regenerations():
    torch.set_num_threads(1)
    tokenizer, members, nonmembers, _, untrained = membership_setup()
    config = _audit_config()
    canaries, _ = nodes_audit.plant_canaries_node(members, _public_corpus(), config)
    inserted = canaries[canaries["inserted"]]
    models = {"summary_lm": train(tiny_lm(tokenizer, 4), tokenizer,
                                  summary_rows(inserted, tokenizer), 120),
              "caption_lm": train(tiny_lm(tokenizer, 5), tokenizer,
                                  caption_rows(inserted, tokenizer), 150),
              "summary_lm_reference": untrained["summary"],
              "caption_lm_reference": untrained["caption"]}
    section = nodes_audit.privacy_audit_node(
        {"models": models, "ledger": ledger()}, canaries, members, nonmembers, tokenizer,
        SamplingConfig(show_progress=False), config)
    found = section["metrics"]
    assert section["internal"] and section["absent"] is None
    for role in ("summary_lm", "caption_lm"):
        assert found[f"{role}_canary_auc"] == 1.0 and found[f"{role}_canary_ref_auc"] == 1.0
        assert found[f"{role}_member_verbatim_ceiling_auc"] == 1.0  # random texts never repeat
    assert found["n_samples"] == 40
    assert found["canary_captions_regenerated"] >= 1 and found["canary_caption_hits"] >= 10
    assert found["heldout_canary_caption_hits"] == 0
    assert found["heldout_canary_summaries_regenerated"] == 0
    off = nodes_audit.privacy_audit_node({}, canaries.iloc[:0], members, nonmembers, tokenizer,
                                         SamplingConfig(show_progress=False),
                                         PrivacyAuditConfig())
    assert off["metrics"] == {} and "not an audit run" in off["absent"]


def test_audit_config_is_checked():
    with pytest.raises(ValueError, match="need 2"):
        PrivacyAuditConfig(enabled=True, n_heldout_canaries=1)
    assert nodes_audit.deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {
        "a": {"b": 1, "c": 3}}


@pytest.mark.parametrize("n_members", [60, 300])
def test_epsilon_lower_bound_of_a_blind_attack_is_small(n_members):
    """Scores independent of membership certify (almost) nothing, at any class balance."""
    rng = np.random.default_rng(n_members)
    bound = audit.epsilon_lower_bound(rng.random(n_members), rng.random(60), delta=1e-5)
    assert bound < 0.5


def test_epsilon_lower_bound_respects_dp_like_scores():
    """Scores from an ε=1 randomised-response-like attack cannot certify much more than 1."""
    rng = np.random.default_rng(0)
    p = np.exp(1) / (1 + np.exp(1))  # best possible TPR at FPR 1-p for ε = 1 (δ = 0)
    members = (rng.random(400) < p).astype(float)
    nonmembers = (rng.random(400) < 1 - p).astype(float)
    bound = audit.epsilon_lower_bound(members, nonmembers, delta=1e-5)
    assert 0.3 < bound <= 1.0 + 1e-9
