"""The hierarchical sampler: seeded, batched across albums, conditioned on the summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpalbum.distributed import Shard
from dpalbum.models.sampler import (
    AlbumSizePrior,
    SamplingConfig,
    SeededSampling,
    decode_generated,
    generate_texts,
    sample_album_texts,
)
from tests.models.tiny_sampling_lms import (
    COLOURS,
    single_thread,
    tiny_lm,
    tiny_tokenizer,
    trained_toy_lms,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def toy():
    return trained_toy_lms()


def _sample(toy, **overrides):
    params = dict(n_albums=6, seed=11, batch_size=64, show_progress=False) | overrides
    albums, metadata = sample_album_texts(*toy, SamplingConfig(**params))
    return albums, metadata


def _as_bytes(albums) -> bytes:
    return json.dumps([[a.album_id, a.summary, a.captions, a.seed] for a in albums]).encode()


def _texts(albums) -> list[str]:
    return [a.summary for a in albums] + [c for a in albums for c in a.captions]


def _colours(text: str) -> list[str]:
    return [w for w in text.split() if w in COLOURS]


def test_same_seed_gives_byte_identical_texts_and_another_seed_differs(toy):
    first, _ = _sample(toy)
    again, _ = _sample(toy)
    other, _ = _sample(toy, seed=12)
    assert _as_bytes(first) == _as_bytes(again)
    assert _texts(first) != _texts(other)
    assert len({a.summary for a in first}) > 1  # each album draws its own randomness
    assert [a.album_id for a in first] == [f"synthetic_{i:05d}" for i in range(1, 7)]


def test_a_text_does_not_depend_on_its_batch_or_on_the_run_length(toy):
    one_by_one, _ = _sample(toy, batch_size=1)  # no padding at all
    pooled, _ = _sample(toy, batch_size=64)  # left-padded, albums mixed in one batch
    longer_run, _ = _sample(toy, n_albums=9, batch_size=5)
    assert _as_bytes(one_by_one) == _as_bytes(pooled)
    assert _as_bytes(longer_run[:6]) == _as_bytes(pooled)


def test_bf16_on_the_cpu_is_ignored_with_a_note_and_changes_no_text(toy, caplog):
    fp32, _ = _sample(toy)
    with caplog.at_level("INFO", logger="dpalbum.models.devices"):
        bf16, metadata = _sample(toy, precision="bf16")
    assert _as_bytes(bf16) == _as_bytes(fp32)
    assert "bf16 applies on CUDA only" in caplog.text
    assert metadata["sampling_params"]["precision"] == "bf16" and metadata["device"] == "cpu"
    assert "nproc" not in metadata["sampling_params"] and metadata["processes"] == 1


def test_captions_are_conditioned_on_their_own_summary(toy):
    albums, _ = _sample(toy, n_albums=30)
    pairs = [(a.summary, c) for a in albums for c in a.captions]
    # the toy caption LM learned to copy the summary's colour: chance would be 1 in 4
    agree = np.mean([_colours(c) == _colours(s)[:1] for s, c in pairs])
    # control: against another album's summary, agreement falls towards chance
    shifted = [(albums[(i + 1) % len(albums)].summary, c)
               for i, a in enumerate(albums) for c in a.captions]
    control = np.mean([_colours(c) == _colours(s)[:1] for s, c in shifted])
    assert agree >= 0.9, (agree, albums[:3])
    assert control <= 0.6, control


def test_captions_for_all_albums_share_batched_generate_calls(toy):
    summary_lm, caption_lm, tokenizer = toy
    calls = {"summary": 0, "caption": 0}

    def counting(model, role):
        original = model.generate

        def generate(*args, **kwargs):
            calls[role] += 1
            return original(*args, **kwargs)

        return generate

    summary_lm.generate = counting(summary_lm, "summary")
    caption_lm.generate = counting(caption_lm, "caption")
    try:
        config = SamplingConfig(n_albums=10, seed=1, batch_size=16, show_progress=False,
                                photos_per_album={"min": 4, "max": 4})
        albums, metadata = sample_album_texts(summary_lm, caption_lm, tokenizer, config)
    finally:
        del summary_lm.generate, caption_lm.generate
    assert metadata["n_captions"] == sum(len(a.captions) for a in albums) == 40
    assert calls == {"summary": 1, "caption": 3}  # ceil(40 / 16), not one call per caption


def test_album_sizes_come_from_the_public_prior_and_say_so(toy):
    albums, metadata = _sample(toy, n_albums=12, photos_per_album={"min": 2, "max": 3})
    assert {len(a.captions) for a in albums} == {2, 3}
    assert "public prior" in metadata["album_size_source"]
    assert "private album sizes were not read" in metadata["album_size_source"]
    fixed, _ = _sample(toy, n_albums=3,
                       photos_per_album={"distribution": "categorical", "probs": {5: 1.0}})
    assert [len(a.captions) for a in fixed] == [5, 5, 5]


def test_generated_text_has_no_special_tokens_and_stops_at_eos():
    tokenizer = tiny_tokenizer()
    ids = tokenizer("a red circle", add_special_tokens=False)["input_ids"]
    eos, sep = tokenizer.eos_token_id, tokenizer.sep_token_id
    assert decode_generated(tokenizer, [*ids[:2], sep, ids[2], eos, *ids], eos) == (
        "a red circle", True)
    assert decode_generated(tokenizer, ids, eos) == ("a red circle", False)
    model = tiny_lm(tokenizer, seed=3)  # untrained: emits special tokens at random
    result = generate_texts(model, tokenizer, ["[BOS]"] * 8, list(range(8)), max_new_tokens=12,
                            show_progress=False)
    assert all("[" not in t and t == t.strip() for t in result.texts), result.texts
    assert 0 <= result.cut_at_max_new_tokens <= 8 and result.new_tokens <= 8 * 12


def test_seeded_sampling_draws_from_the_tempered_nucleus():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -4.0])
    rows = 20000
    uniforms = torch.from_numpy(np.random.default_rng(0).random((rows, 1)))
    scores = logits.repeat(rows, 1)
    prompt = torch.zeros((rows, 3), dtype=torch.long)

    def frequencies(**kwargs) -> np.ndarray:
        out = SeededSampling(uniforms, prompt_length=3, **kwargs)(prompt, scores)
        assert torch.isfinite(out).sum(dim=1).eq(1).all()  # exactly one token left per row
        return np.bincount(out.argmax(dim=1).numpy(), minlength=6) / rows

    expected = torch.softmax(logits / 0.7, dim=0).numpy()
    assert np.abs(frequencies(temperature=0.7) - expected).max() < 0.015
    nucleus = frequencies(temperature=1.0, top_p=0.8)
    assert nucleus[3:].sum() == 0 and nucleus[:3].min() > 0  # top-3 hold 0.86 >= 0.8
    assert frequencies(temperature=0.0)[0] == 1.0
    banned = frequencies(temperature=1.0, banned_ids=[0, 1], n_token_ids=5)
    assert banned[[0, 1, 5]].sum() == 0 and banned[2:5].min() > 0  # specials, rows past the vocab


def test_bad_parameters_are_refused_with_their_name():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="min <= max"):
        AlbumSizePrior(min=5, max=3)
    with pytest.raises(ValueError, match="nproc"):
        SamplingConfig(nproc=0)
    with pytest.raises(ValueError, match="precision"):
        SamplingConfig(precision="fp16")
    with pytest.raises(ValueError, match="device"):
        SamplingConfig(device="gpu")
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_texts(tiny_lm(tokenizer, n_positions=16), tokenizer, ["[BOS]"], [0],
                       max_new_tokens=15, show_progress=False)
    # a shard outside a process group would silently drop the other shards' rows
    with pytest.raises(ValueError, match="torchrun"):
        generate_texts(tiny_lm(tokenizer), tokenizer, ["[BOS]"] * 4, list(range(4)),
                       max_new_tokens=4, show_progress=False, shard=Shard(1, 2))
