"""The privacy audit: membership inference must find members of an overfit (non-private) model
(the audit has power) and nothing in an untrained one; canary counting must see memorised
canaries and none in a model that never saw them."""

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
from dpalbum.pipelines.evaluation.config import CanaryConfig, MembershipConfig
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


def test_canary_exposure_counts():
    found = audit.canary_exposure(
        ["a black square in the night", "A black square in the  night", "a red circle in the city",
         "a white diamond in the snow", "garbage"],
        canary_captions=["a black square in the night", "a black square in the beach"],
        canary_protagonists=["black square"], control_protagonists=["white diamond", "white ball"])
    assert found["canary_caption_hits"] == 2 and found["canary_captions_regenerated"] == 1
    assert found["canary_protagonist_rate"] == pytest.approx(2 / 5)
    assert found["control_protagonist_rate"] == pytest.approx(1 / 5 / 2)
    assert found["unparsed_rate"] == pytest.approx(1 / 5)


def _canary_inputs():
    summary = "a festival album of a black triangle"
    captions = ["a black triangle in the night with a kite", "a black triangle in the beach"]
    album_texts = pd.DataFrame({"album_id": ["album_0001", "canary_0001"],
                                "summary": ["a birthday album of a red circle", summary],
                                "captions": [["a red circle in the city"], captions]})
    truth = pd.DataFrame({"album_id": ["album_0001", "canary_0001"], "split": ["train", "canary"],
                          "colour": ["red", "black"], "shape": ["circle", "triangle"]})
    from dpalbum.albums.model import Album, AlbumSet
    canaries = AlbumSet([Album("canary_0001", [])])
    return album_texts, truth, canaries


def test_canary_node_sees_a_memorised_canary_and_not_an_unseen_one():
    torch.set_num_threads(1)
    tokenizer = word_tokenizer()
    album_texts, truth, canaries = _canary_inputs()
    only_canary = album_texts.iloc[[1]]
    summary_lm = train(tiny_lm(tokenizer, 4), tokenizer, summary_rows(only_canary, tokenizer), 80)
    caption_lm = train(tiny_lm(tokenizer, 5), tokenizer, caption_rows(only_canary, tokenizer), 120)
    sampling = SamplingConfig(n_albums=1, show_progress=False)
    config = CanaryConfig(n_samples=20, captions_per_album=5)
    section = nodes.canary_audit_node(summary_lm, caption_lm, tokenizer, album_texts, canaries,
                                      truth, sampling, config)
    assert section["metrics"]["n_samples"] == 20
    assert section["metrics"]["canary_caption_hits"] >= 10
    assert section["metrics"]["canary_captions_regenerated"] >= 1
    fresh = nodes.canary_audit_node(tiny_lm(tokenizer, 6), tiny_lm(tokenizer, 7), tokenizer,
                                    album_texts, canaries, truth, sampling, config)
    assert fresh["metrics"]["canary_caption_hits"] == 0
    not_trained = nodes.canary_audit_node(summary_lm, caption_lm, tokenizer,
                                          album_texts.iloc[[0]], canaries, truth, sampling,
                                          config)
    assert "not an audit run" in not_trained["absent"]


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
