"""Sampling and rendering sharded over torchrun processes: the one-process output, bit for bit.

The batch-plan tests run in this process. The two end-to-end tests start 2 CPU workers (gloo) each:
a torchrun start costs several seconds of imports, so there is one 2-process run per test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dpalbum.distributed import Shard, merge_round_robin
from dpalbum.models import sampler
from dpalbum.models.devices import generation_autocast, generation_device
from dpalbum.models.renderer import (
    CoherenceConfig,
    EmbeddedRenderer,
    PretrainedRenderer,
    RendererConfig,
    _album_batches,
    album_seed,
)
from dpalbum.models.sampler import SamplingConfig, generate_texts, plan_text_batches
from dpalbum.models.sharded_rendering import (
    plan_render_batches,
    render_albums,
    render_batches,
)
from dpalbum.models.text_format import SpecialTokens, caption_prompt
from dpalbum.pipelines.sampling.nodes import sample_albums
from tests.models.tiny_diffusers import save_tiny_stable_diffusion
from tests.models.tiny_sampling_lms import single_thread, trained_toy_lms
from tests.pipelines.test_sampling import TEXT_PLAN, text_ledger, trained_under


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture
def cpu_workers(monkeypatch):
    """Workers like this process: one torch thread, on the CPU (gloo). Bit-for-bit identity is
    promised at equal device and threads: a worker must not take a GPU of the test machine."""
    torch.cuda.is_available()  # this process counts its GPUs before the variable hides them
    monkeypatch.setenv("DPALBUM_TORCH_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


# ---------------------------------------------------------------- batch plans (no processes)


def test_text_batch_plan_is_split_round_robin_and_merges_back_to_the_global_plan():
    lengths = [5, 3, 3, 9, 1, 3, 7, 5, 2, 3, 4]
    plan = plan_text_batches(lengths, batch_size=3)
    # sorted by length, ties in prompt order (a stable sort: the same on every process)
    assert plan == [[4, 8, 1], [2, 5, 9], [10, 0, 7], [6, 3]]
    for world in (1, 2, 3, 5):
        parts = [Shard(rank, world).take(plan) for rank in range(world)]
        assert parts[0][0] == plan[0] and (world == 1 or parts[1][0] == plan[1])
        assert merge_round_robin(parts) == plan  # every batch exactly once, unchanged
        rows = sorted(i for part in parts for batch in part for i in batch)
        assert rows == list(range(len(lengths)))


def test_a_planned_render_batch_is_planned_again_as_one_unchanged_batch():
    rng = np.random.default_rng(0)
    for _ in range(200):
        counts = rng.integers(0, 10, size=rng.integers(1, 30)).tolist()
        batch_size = int(rng.integers(1, 20))
        plan = plan_render_batches([["p"] * n for n in counts], batch_size)
        assert plan == _album_batches(counts, batch_size)
        assert sorted(a for batch in plan for a in batch) == list(range(len(counts)))
        for batch in plan:  # what render() does with one batch's albums alone
            assert _album_batches([counts[a] for a in batch], batch_size) == [
                list(range(len(batch)))], (counts, batch_size, batch)


def test_generation_runs_on_cuda_when_present_else_on_the_cpu():
    assert generation_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert generation_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            generation_device("cuda")
    with pytest.raises(ValueError, match="device"):
        generation_device("gpu")
    with pytest.raises(ValueError, match="precision"):
        render_albums(None, [], [], CoherenceConfig(), precision="fp16")
    with generation_autocast("bf16", torch.device("cpu")):  # ignored on the CPU
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def _tiny_renderer() -> EmbeddedRenderer:
    return EmbeddedRenderer.build(RendererConfig(
        image_size=16, block_out_channels=[8, 16], norm_num_groups=4, attention_head_dim=4,
        num_inference_steps=3, render_batch_size=6, device="cpu", seed=0))


def _toy_albums() -> tuple[list[list[str]], list[int]]:
    colours, scenes = ["red", "blue", "yellow", "purple", "white"], ["beach", "city", "snow"]
    counts = [3, 2, 4, 2, 3]  # render_batch_size 6: batches [0, 1], [2, 3], [4]
    prompts = [[f"a {colours[a]} circle in the {scenes[(a + p) % 3]}" for p in range(n)]
               for a, n in enumerate(counts)]
    return prompts, [album_seed(5, f"synthetic_{a:05d}") for a in range(len(counts))]


def _spy_on_sampling(renderer: EmbeddedRenderer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record (initial noise, sentence embeddings) of every denoising batch the renderer runs."""
    calls, original = [], renderer.sample

    def sample(noise, cond, *args, **kwargs):
        calls.append((noise.clone(), cond.pooled.clone()))
        return original(noise, cond, *args, **kwargs)

    renderer.sample = sample
    return calls


def test_a_rank_renders_its_batches_of_the_global_plan_exactly_as_one_call_does():
    renderer, coherence = _tiny_renderer(), CoherenceConfig()
    prompts, seeds = _toy_albums()
    plan = plan_render_batches(prompts, renderer.config.render_batch_size)
    assert plan == [[0, 1], [2, 3], [4]]
    calls = _spy_on_sampling(renderer)
    whole = renderer.render(prompts, seeds, coherence, progress=False)
    assert [len(noise) for noise, _ in calls] == [5, 6, 3]  # photos per planned batch
    by_batch: dict[int, np.ndarray] = {}
    for rank in (1, 0):  # rank 1 alone first: the order ranks run in must not matter
        start = len(calls)
        by_batch |= render_batches(renderer, prompts, seeds, coherence,
                                   Shard(rank, 2).take(plan))
        # the same denoising batches as the one-process call: same rows, noise, conditioning
        expected = calls[rank:start:2]
        assert len(calls) - start == len(expected)
        for (noise, pooled), (noise_1, pooled_1) in zip(calls[start:], expected):
            assert torch.equal(noise, noise_1) and torch.equal(pooled, pooled_1)
    assert sorted(by_batch) == list(range(len(prompts)))
    for a, images in enumerate(whole):
        assert images.dtype == np.uint8 and images.shape == (len(prompts[a]), 16, 16, 3)
        assert np.array_equal(by_batch[a], images), a
    assert not np.array_equal(whole[0][0], whole[1][0])  # albums really differ


class _RecordingPipeline:
    """A diffusers pipeline stand-in that records the initial latents of every call."""

    def __init__(self, pipeline) -> None:
        self.pipeline, self.latents = pipeline, []

    def __getattr__(self, name: str):
        return getattr(self.pipeline, name)

    def __call__(self, **kwargs):
        self.latents.append(kwargs["latents"].clone())
        return self.pipeline(**kwargs)


def test_the_pretrained_backend_renders_a_ranks_batches_as_one_call_does(tmp_path):
    folder = save_tiny_stable_diffusion(tmp_path / "tiny_sd")
    renderer = PretrainedRenderer.load(RendererConfig(
        backend="pretrained", model_name_or_path=str(folder), image_size=16,
        num_inference_steps=2, sampler="ddim", device="cpu", render_batch_size=6))
    recorder = renderer.pipeline = _RecordingPipeline(renderer.pipeline)
    prompts, seeds = _toy_albums()
    coherence = CoherenceConfig()
    whole = renderer.render(prompts, seeds, coherence, progress=False)
    plan = plan_render_batches(prompts, renderer.config.render_batch_size)
    one_process = list(recorder.latents)
    recorder.latents.clear()
    shards = [Shard(rank, 2).take(plan) for rank in range(2)]
    by_batch = render_batches(renderer, prompts, seeds, coherence, shards[0] + shards[1])
    assert len(one_process) == len(plan) == 3
    for latents, expected in zip(recorder.latents, one_process[0::2] + one_process[1::2]):
        assert torch.equal(latents, expected)
    for a, images in enumerate(whole):
        assert np.array_equal(by_batch[a], images), a


def test_a_rank_samples_its_batches_of_the_global_plan_and_gets_the_one_process_texts(
        monkeypatch):
    summary_lm, caption_lm, tokenizer = trained_toy_lms()
    tokens = SpecialTokens.of(tokenizer)
    summaries = ["a holiday with a red circle", "a birthday", "a holiday with a blue square in "
                 "the city", "a red", "a birthday with a yellow circle", "a holiday with a"]
    prompts = [caption_prompt(summaries[i % 6], tokens) for i in range(11)]
    seeds = [100 + i for i in range(11)]
    decoding = dict(max_new_tokens=8, batch_size=3, show_progress=False)
    one_process = generate_texts(caption_lm, tokenizer, prompts, seeds, **decoding)
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    plan = plan_text_batches([len(ids) for ids in encoded], 3)
    assert len(plan) == 4 and len({len(ids) for ids in encoded}) > 3
    batches_run, original = [], caption_lm.generate

    def generate(input_ids, attention_mask, **kwargs):
        batches_run.append([ids[mask.bool()].tolist() for ids, mask in
                            zip(input_ids, attention_mask)])
        return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(caption_lm, "generate", generate)
    for rank in (0, 1):
        shard, gathered = Shard(rank, 2), []
        # in-process stand-ins for the process group: this rank's rows are all that come back
        monkeypatch.setattr(sampler, "current_shard", lambda shard=shard: shard)
        monkeypatch.setattr(sampler, "all_gather",
                            lambda rows, seen=gathered: seen.append(rows) or [rows])
        batches_run.clear()
        part = generate_texts(caption_lm, tokenizer, prompts, seeds, shard=shard, **decoding)
        mine = shard.take(plan)
        assert batches_run == [[encoded[i] for i in batch] for batch in mine]
        rows = sorted(i for batch in mine for i in batch)
        assert sorted(gathered[0]) == rows
        assert [part.texts[i] for i in rows] == [one_process.texts[i] for i in rows]
    assert len(set(one_process.texts)) > 3


# ---------------------------------------------------------------- 1 vs 2 torchrun processes


def test_sampling_on_two_processes_gives_the_one_process_texts(cpu_workers):
    summary_lm, caption_lm, tokenizer = trained_toy_lms()
    params = {"n_albums": 7, "seed": 3, "photos_per_album": {"min": 2, "max": 4},
              "temperature": 1.0, "top_p": 0.95, "max_new_tokens": {"summary": 12, "caption": 12},
              "batch_size": 3, "show_progress": False, "device": "cpu"}
    ledger = text_ledger()  # the LMs carry its records (the workers get them with the models)
    with trained_under(ledger, summary_lm, caption_lm):
        one = sample_albums(summary_lm, caption_lm, tokenizer, ledger,
                            SamplingConfig(**params, nproc=1))
        two = sample_albums(summary_lm, caption_lm, tokenizer, ledger,
                            SamplingConfig(**params, nproc=2))
    # 3 summary batches and 6+ caption batches: both ranks sample, rank 1 an odd share
    assert one.attrs["sampling"]["n_captions"] >= 16
    assert (one.attrs["sampling"]["processes"], two.attrs["sampling"]["processes"]) == (1, 2)
    as_bytes = [json.dumps(frame[["album_id", "summary", "seed"]].values.tolist()
                           + frame["captions"].map(list).tolist()).encode() for frame in (one, two)]
    assert as_bytes[0] == as_bytes[1]
    assert len(set(one["summary"])) > 1
    for key in ("generated_tokens", "captions_cut_at_max_new_tokens", "sampling_params",
                "privacy_plan_id"):
        assert one.attrs["sampling"][key] == two.attrs["sampling"][key], key
    assert two.attrs["sampling"]["privacy_plan_id"] == TEXT_PLAN
    assert next(summary_lm.parameters()).device == torch.device("cpu")  # left where it was


def test_rendering_on_two_processes_gives_the_one_process_images(cpu_workers):
    renderer, coherence = _tiny_renderer(), CoherenceConfig()
    prompts, seeds = _toy_albums()
    one = render_albums(renderer, prompts, seeds, coherence, nproc=1)
    two = render_albums(renderer, prompts, seeds, coherence, nproc=2)
    assert len(one) == len(two) == len(prompts)
    for a, (ours, theirs) in enumerate(zip(one, two)):
        assert theirs.dtype == np.uint8 and theirs.shape == (len(prompts[a]), 16, 16, 3)
        assert np.array_equal(ours, theirs), a
