"""Album summarisers: the embedded template summariser and the pretrained-LM path."""

from __future__ import annotations

import pytest
import torch

from dpalbum.albums.vocabulary import parse_caption
from dpalbum.models.summariser import (
    PretrainedSummariser,
    SummariserConfig,
    TemplateSummariser,
    best_event,
    build_summariser,
    extractive_summary,
    template_summary,
)
from dpalbum.models.tokenizer import train_public_tokenizer

HOLIDAY = [
    "a red circle in the city with a ball",
    "a red circle in the beach with a ball and a kite",
    "a red circle in the beach",
    "a blue square in the beach with a kite",  # a misread photo: the majority protagonist wins
]


def test_template_summary_states_protagonist_scenes_and_objects_by_frequency():
    assert template_summary(HOLIDAY, name_event=False) == (
        "an album of a red circle, in the beach and the city, with a ball and a kite")
    assert template_summary(HOLIDAY) == (
        "a holiday album of a red circle, in the beach and the city, with a ball and a kite")


def test_template_summary_parses_back_to_protagonist_main_scene_and_event():
    parsed = parse_caption(template_summary(HOLIDAY))
    assert (parsed["colour"], parsed["shape"], parsed["scene"]) == ("red", "circle", "beach")
    assert parsed["event"] == "holiday"
    assert parsed["objects"] == ["ball", "kite"]


def test_ties_keep_first_appearance_and_empty_parts_are_left_out():
    captions = ["a blue square in the snow", "a blue square in the forest"]
    assert template_summary(captions, name_event=False) == (
        "an album of a blue square, in the snow and the forest")
    assert template_summary(["a blue square"], name_event=False) == "an album of a blue square"


def test_events_are_chosen_by_scenes_and_objects():
    assert best_event(["forest", "snow"], ["tree", "flag"]) == "hike"
    assert best_event(["snow", "forest"], ["tree", "ball", "ball"]) == "winter break"
    assert best_event(["city", "night"], ["cake"]) == "birthday"
    assert best_event([], []) is None


def test_captions_outside_the_vocabulary_get_an_extractive_summary():
    captions = ["a dog", "a man with a dog", "a man with a dog on a beach", "sunset"]
    assert template_summary(captions) == "an album of 4 photos: a man with a dog"
    assert extractive_summary([]) == "an empty album"


def test_template_summariser_keeps_album_order():
    summariser = build_summariser(SummariserConfig())
    assert isinstance(summariser, TemplateSummariser)
    out = summariser.summarise([HOLIDAY, ["a yellow triangle in the night with a cake"]])
    assert [parse_caption(s)["colour"] for s in out] == ["red", "yellow"]


@pytest.fixture(scope="module")
def tiny_lm_folder(tmp_path_factory):
    """A random GPT-2 and a public BPE saved like a hub checkpoint (quality is irrelevant)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = train_public_tokenizer(HOLIDAY * 3)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(
        vocab_size=len(tokenizer), n_positions=512, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    folder = tmp_path_factory.mktemp("tiny_causal_lm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_pretrained_summariser_writes_one_line_per_album(tiny_lm_folder):
    config = SummariserConfig(backend="pretrained", model_name_or_path=tiny_lm_folder,
                              max_new_tokens=6, batch_size=2, device="cpu")
    summariser = build_summariser(config)
    assert isinstance(summariser, PretrainedSummariser)
    albums = [HOLIDAY, HOLIDAY[:1], ["a blue square in the snow"]]
    summaries = summariser.summarise(albums)
    assert len(summaries) == 3
    assert all(isinstance(s, str) and s and "\n" not in s for s in summaries)
    assert summariser.summarise(albums[1:2]) == summaries[1:2]  # left padding: batch-invariant


def test_pretrained_summariser_falls_back_to_the_template_when_silent(tiny_lm_folder, monkeypatch):
    summariser = build_summariser(SummariserConfig(
        backend="pretrained", model_name_or_path=tiny_lm_folder, device="cpu"))
    eos = summariser.tokenizer.eos_token_id
    monkeypatch.setattr(summariser.model, "generate", lambda input_ids, **kw: torch.cat(
        [input_ids, torch.full((len(input_ids), 1), eos)], dim=1))
    assert summariser.summarise([HOLIDAY]) == [template_summary(HOLIDAY)]


def test_prompts_longer_than_the_model_are_refused(tiny_lm_folder):
    summariser = build_summariser(SummariserConfig(
        backend="pretrained", model_name_or_path=tiny_lm_folder, device="cpu",
        max_new_tokens=500))
    with pytest.raises(ValueError, match="exceeds the model's 512 positions"):
        summariser.summarise([HOLIDAY])
    with pytest.raises(ValueError, match="model_name_or_path"):
        build_summariser(SummariserConfig(backend="pretrained"))
