"""The renderer: seeding, album coherence, conditioning, training, save/load, pretrained backend.

Tiny models on one thread (a 16x16 UNet of ~0.1M parameters, a ~0.6M Stable Diffusion pipeline):
every test runs in seconds on a shared 2-core CPU.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from dpalbum.models.renderer import (
    CoherenceConfig,
    EmbeddedRenderer,
    PretrainedRenderer,
    RendererConfig,
    album_character,
    album_prompts,
    album_seed,
    initial_noise,
    load_renderer,
    train_embedded_renderer,
)
from dpalbum.models.renderer_io import RendererFolderDataset
from tests.models.tiny_diffusers import save_tiny_stable_diffusion

SUMMARY = "an album of a red circle: at the beach and in the city, with a ball"


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core box: threads only add overhead
    yield
    torch.set_num_threads(saved)


def tiny_config(**overrides) -> RendererConfig:
    settings = dict(image_size=16, block_out_channels=[8, 16], norm_num_groups=4,
                    attention_head_dim=4, num_inference_steps=4, render_batch_size=16,
                    train_steps=8, train_batch_size=8, warmup_steps=2, learning_rate=3e-3,
                    device="cpu", seed=0)
    return RendererConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tiny_renderer() -> EmbeddedRenderer:
    return EmbeddedRenderer.build(tiny_config())


def toy_albums(n_albums: int = 4, n_photos: int = 4) -> list[list[str]]:
    scenes = ["beach", "city", "snow", "forest", "night", "desert"]
    colours = ["red", "blue", "yellow", "purple", "white", "black"]
    return [[f"a {colours[a % 6]} circle in the {scenes[(a + p) % 6]}" for p in range(n_photos)]
            for a in range(n_albums)]


def _pairwise_mse(images: list[np.ndarray]) -> list[float]:
    return [float(np.mean((a.astype(float) - b.astype(float)) ** 2))
            for a, b in itertools.combinations(images, 2)]


# ---------------------------------------------------------------- seeds and coherence


def test_album_seed_is_stable_and_differs_by_album_and_global_seed():
    assert album_seed(7, "album_0001") == album_seed(7, "album_0001")
    assert album_seed(7, "album_0001") != album_seed(7, "album_0002")
    assert album_seed(7, "album_0001") != album_seed(8, "album_0001")
    assert 0 <= album_seed(7, "album_0001") < 2**63


def test_same_seed_gives_identical_images_and_another_seed_does_not(tiny_renderer):
    albums, coherence = toy_albums(), CoherenceConfig()
    seeds = [album_seed(1, f"a{i}") for i in range(len(albums))]
    first = tiny_renderer.render(albums, seeds, coherence, progress=False)
    again = tiny_renderer.render(albums, seeds, coherence, progress=False)
    other = tiny_renderer.render(albums, [s + 1 for s in seeds], coherence, progress=False)
    assert [a.shape for a in first] == [(4, 16, 16, 3)] * 4 and first[0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other))


def test_an_album_does_not_depend_on_the_albums_batched_with_it(tiny_renderer):
    albums, coherence = toy_albums(), CoherenceConfig()
    seeds = [11, 12, 13, 14]
    together = tiny_renderer.render(albums, seeds, coherence, progress=False)
    alone = tiny_renderer.render(albums[2:3], seeds[2:3], coherence, progress=False)
    # Same noise, same prompts; only float summation order may differ with the batch size.
    assert np.abs(together[2].astype(int) - alone[0].astype(int)).max() <= 2


def test_initial_noise_shares_the_album_noise_by_latent_jitter():
    shape = (3, 8, 8)
    same = initial_noise(5, 3, shape, CoherenceConfig(latent_jitter=0.0))
    assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2])
    free = initial_noise(5, 3, shape, CoherenceConfig(shared_initial_latents=False))
    assert not torch.allclose(free[0], free[1])
    mixed = initial_noise(5, 400, (3, 16, 16), CoherenceConfig(latent_jitter=0.3))
    assert abs(float(mixed.std()) - 1.0) < 0.05  # unit variance for any jitter
    corr = torch.corrcoef(mixed[:2].reshape(2, -1))[0, 1]
    assert abs(float(corr) - (1 - 0.3**2)) < 0.05  # photos share 1 - j^2 of the variance


def test_shared_latents_make_photos_of_an_album_more_alike_than_other_albums(tiny_renderer):
    albums = toy_albums(n_albums=6, n_photos=3)
    seeds = [album_seed(3, f"a{i}") for i in range(len(albums))]

    def within_between(coherence):
        out = tiny_renderer.render(albums, seeds, coherence, progress=False)
        within = np.mean([m for album in out for m in _pairwise_mse(list(album))])
        between = np.mean(_pairwise_mse([album[0] for album in out]))
        return within, between

    within, between = within_between(CoherenceConfig(latent_jitter=0.3))
    assert within < 0.5 * between
    within_off, between_off = within_between(CoherenceConfig(shared_initial_latents=False))
    assert within_off > 0.8 * between_off  # without shared noise the albums are no tighter


def test_character_is_added_to_captions_that_lack_it():
    coherence = CoherenceConfig()
    assert album_character(SUMMARY, coherence) == "a red circle"
    prompts = album_prompts(SUMMARY, ["a red circle in the beach", "a ball in the city"],
                            coherence)
    assert prompts == ["a red circle in the beach", "a red circle, a ball in the city"]
    off = CoherenceConfig(character_in_every_prompt=False)
    assert album_prompts(SUMMARY, ["a ball in the city"], off) == ["a ball in the city"]
    assert album_prompts("a summary without the phrase", ["x"], coherence) == ["x"]


# ---------------------------------------------------------------- conditioning and training


def test_prompt_and_guidance_change_the_images(tiny_renderer):
    seeds = [21, 21]
    red, blue = tiny_renderer.render([["a red circle"], ["a blue square"]], seeds,
                                     CoherenceConfig(guidance_scale=3.0), progress=False)
    assert not np.array_equal(red, blue)  # same noise: only the text differs
    unguided = tiny_renderer.render([["a red circle"]], seeds[:1],
                                    CoherenceConfig(guidance_scale=1.0), progress=False)
    assert not np.array_equal(red, unguided[0])


def test_guidance_applies_to_the_first_guided_fraction_of_steps_only(tiny_renderer):
    seeds, prompts = [5], [["a red circle", "a red circle at the beach"]]

    def render(scale, fraction):
        coherence = CoherenceConfig(guidance_scale=scale, guided_fraction=fraction)
        return tiny_renderer.render(prompts, seeds, coherence, progress=False)[0]

    unguided, everywhere, half = render(1.0, 1.0), render(3.0, 1.0), render(3.0, 0.5)
    assert np.array_equal(render(3.0, 0.0), unguided)  # no guided step: the conditional model
    assert not np.array_equal(half, unguided) and not np.array_equal(half, everywhere)
    assert np.array_equal(render(3.0, 0.5), half)  # still seeded


def test_channels_last_is_a_memory_order_not_a_model():
    images = np.random.default_rng(1).integers(0, 255, (8, 16, 16, 3)).astype(np.uint8)
    captions = ["a red picture", "a blue picture"] * 4
    nhwc = train_embedded_renderer(images, captions, tiny_config(train_steps=3), progress=False)
    nchw = train_embedded_renderer(images, captions,
                                   tiny_config(train_steps=3, channels_last=False),
                                   progress=False)
    for a, b in zip(nhwc.unet.parameters(), nchw.unet.parameters()):
        assert a.is_contiguous()  # saved and DP-fine-tuned in the usual order
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-4)  # same maths, other kernels
    assert nhwc.training_report["steps"] == 3


def test_a_renderer_that_has_rendered_can_still_be_trained(tiny_renderer):
    tiny_renderer.render([["a red circle"]], [3], CoherenceConfig(), progress=False)
    with torch.inference_mode():  # a caller's inference mode must not freeze the weights either
        tiny_renderer.render([["a red circle"]], [3], CoherenceConfig(), progress=False)
    for p in tiny_renderer.unet.parameters():
        assert not p.is_inference() and p.is_contiguous()
    side = tiny_renderer.config.image_size // tiny_renderer.config.patch_size
    x = torch.randn(2, tiny_renderer.unet.config.in_channels, side, side)
    cond = tiny_renderer.encode(["a red circle", "a blue square"])
    tiny_renderer.predict_noise(x, torch.tensor([10, 500]), cond).pow(2).mean().backward()


def test_training_is_seeded_and_lowers_the_loss():
    rng = np.random.default_rng(0)
    images = np.zeros((16, 16, 16, 3), np.uint8)
    images[::2] = (220, 40, 40)
    images[1::2] = (40, 40, 220)
    images = np.clip(images + rng.integers(-10, 10, images.shape), 0, 255).astype(np.uint8)
    captions = ["a red picture", "a blue picture"] * 8
    config = tiny_config(train_steps=12, snr_gamma=None)
    first = train_embedded_renderer(images, captions, config, {"selection": "all"},
                                    progress=False)
    again = train_embedded_renderer(images, captions, config, progress=False)
    report = first.training_report
    assert report["steps"] == 12 and report["n_images"] == 16 and report["selection"] == "all"
    weights = [p for p in first.unet.state_dict().values()]
    assert all(torch.equal(a, b) for a, b in zip(weights, again.unet.state_dict().values()))
    untrained = EmbeddedRenderer.build(config)
    assert report["final_loss"] < 0.9  # an untrained UNet predicts noise at MSE ~1
    assert any(not torch.equal(a, b) for a, b in
               zip(weights, untrained.unet.state_dict().values()))


def test_patched_renderer_trains_renders_and_round_trips(tmp_path):
    """patch_size 2: the UNet runs on (3*4, S/2, S/2) patches; images come back at full size."""
    from dpalbum.models.renderer import from_patches, to_patches

    x = torch.randn(2, 3, 16, 16)
    assert to_patches(x, 2).shape == (2, 12, 8, 8) and torch.equal(from_patches(to_patches(x, 2),
                                                                               2), x)
    assert to_patches(x, 1) is x
    rng = np.random.default_rng(0)
    images = np.zeros((16, 16, 16, 3), np.uint8)
    images[::2] = (220, 40, 40)
    images[1::2] = (40, 40, 220)
    images = np.clip(images + rng.integers(-10, 10, images.shape), 0, 255).astype(np.uint8)
    config = tiny_config(patch_size=2, train_steps=40, snr_gamma=None)
    renderer = train_embedded_renderer(images, ["a red picture", "a blue picture"] * 8, config,
                                       progress=False)
    assert renderer.unet.config.in_channels == 12 and renderer.unet.config.sample_size == 8
    assert renderer.training_report["final_loss"] < 0.95  # untrained: ~1 (this toy: 0.92)
    assert "2x2 patches" in renderer.describe()["architecture"]
    albums = toy_albums(2, 3)
    seeds = [album_seed(0, "a"), album_seed(0, "b")]
    first = renderer.render(albums, seeds, CoherenceConfig(), progress=False)
    assert [a.shape for a in first] == [(3, 16, 16, 3)] * 2 and first[0].dtype == np.uint8
    renderer.save_pretrained(str(tmp_path / "patched"))
    loaded = load_renderer(str(tmp_path / "patched"))
    assert loaded.config.patch_size == 2
    again = loaded.render(albums, seeds, CoherenceConfig(), progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def test_no_pretraining_images_returns_an_untrained_renderer():
    renderer = train_embedded_renderer(np.zeros((0, 16, 16, 3), np.uint8), [], tiny_config(),
                                       progress=False)
    assert renderer.training_report["steps"] == 0


@pytest.mark.parametrize("overrides, message", [
    ({"sampler": "euler"}, "sampler"),
    ({"backend": "pretrained"}, "model_name_or_path"),
    ({"backend": "onnx"}, "backend"),
    ({"block_out_channels": [10, 16]}, "norm_num_groups"),
    ({"patch_size": 0}, "patch_size"),
    ({"patch_size": 3}, "divisible by patch_size"),
])
def test_bad_renderer_config_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_bad_coherence_config_is_refused():
    with pytest.raises(ValueError, match="latent_jitter"):
        CoherenceConfig(latent_jitter=1.5)
    with pytest.raises(ValueError, match="character"):
        CoherenceConfig(character_pattern=r"album of (.+)")


# ---------------------------------------------------------------- save / load


def test_embedded_renderer_round_trips_through_its_folder_dataset(tiny_renderer, tmp_path):
    dataset = RendererFolderDataset(str(tmp_path / "renderer"))
    dataset.save(tiny_renderer)
    files = {p.relative_to(tmp_path / "renderer").as_posix()
             for p in (tmp_path / "renderer").rglob("*") if p.is_file()}
    assert "renderer.json" in files and "unet/diffusion_pytorch_model.safetensors" in files
    assert not any(f.endswith((".bin", ".pkl", ".pt", ".pickle")) for f in files)
    loaded = dataset.load()
    albums, seeds = toy_albums(2, 2), [1, 2]
    expected = tiny_renderer.render(albums, seeds, CoherenceConfig(), progress=False)
    got = loaded.render(albums, seeds, CoherenceConfig(), progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    with pytest.raises(DatasetError, match="renderers"):
        dataset.save(torch.nn.Linear(2, 2))


def test_loading_a_folder_that_is_not_a_renderer_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a dpalbum renderer"):
        load_renderer(str(tmp_path))


# ---------------------------------------------------------------- pretrained backend


@pytest.fixture(scope="module")
def tiny_pipeline_folder(tmp_path_factory) -> Path:
    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "pipeline")


def test_pretrained_backend_renders_resized_seeded_albums(tiny_pipeline_folder, tmp_path):
    config = RendererConfig(backend="pretrained", model_name_or_path=str(tiny_pipeline_folder),
                            image_size=32, num_inference_steps=2, sampler="ddim", device="cpu")
    renderer = PretrainedRenderer.load(config)
    assert renderer.resolution == 16  # the pipeline's native size: 8 latents x VAE factor 2
    albums, seeds, coherence = toy_albums(2, 3), [4, 5], CoherenceConfig(latent_jitter=0.0)
    first = renderer.render(albums, seeds, coherence, progress=False)
    assert [a.shape for a in first] == [(3, 32, 32, 3)] * 2 and first[0].dtype == np.uint8

    RendererFolderDataset(str(tmp_path / "renderer")).save(renderer)
    assert not (tmp_path / "renderer" / "pipeline").exists()  # store_weights off: a reference
    again = load_renderer(str(tmp_path / "renderer")).render(albums, seeds, coherence,
                                                               progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert "StableDiffusionPipeline" in renderer.describe()["architecture"]


def test_pixel_space_samplers_bound_their_x0_estimate_and_latent_samplers_do_not():
    from dpalbum.models.renderer import build_noise_scheduler, make_sampler

    config = build_noise_scheduler(tiny_config()).config
    dpm, ddim = make_sampler("dpm", config), make_sampler("ddim", config)
    # Without these, x0 at t=999 of the cosine schedule explodes into saturated noise.
    assert dpm.config.thresholding and dpm.config.sample_max_value == 1.0
    assert ddim.config.clip_sample
    assert dpm.config.timestep_spacing == ddim.config.timestep_spacing == "trailing"
    assert not make_sampler("dpm", config, pixel_space=False).config.thresholding


# ---------------------------------------------------------------- DP fine-tuning


@pytest.mark.parametrize("patch_size", [1, 2])
def test_renderer_per_album_gradients_from_opacus_equal_autograd(tiny_renderer, patch_size):
    """What the privacy core clips must be the true per-album gradient of *this* UNet (class
    embedding, masked cross-attention, GroupNorm; Conv2d guard on) with the diffusion loss,
    on pixels and on space-to-depth patches."""
    import copy

    if patch_size > 1:
        tiny_renderer = EmbeddedRenderer.build(tiny_config(patch_size=patch_size))

    from dpalbum.models.renderer import diffusion_row_loss, dp_rows_and_collate
    from dpalbum.privacy import album_gradients, unwrap_dp, wrap_for_dp

    unet = copy.deepcopy(tiny_renderer.unet).train()
    images = [np.random.default_rng(a).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
              for a, n in enumerate((1, 3, 2))]
    captions = [toy_albums(1, len(im))[0] for im in images]
    rows, collate = dp_rows_and_collate(tiny_renderer, images, captions, seed=0)
    # Freeze each row's noise, timestep and dropout draw, so both passes see the same loss.
    frozen = []
    for album in rows:
        batch = collate(album)
        frozen.append([{k: v[i] for k, v in batch.items()} for i in range(len(album))])

    def stack(batch_rows):
        return {k: torch.stack([r[k] for r in batch_rows]) for k in batch_rows[0]}

    params = [p for p in unet.parameters() if p.requires_grad]
    reference = []
    for album in frozen:
        unet.zero_grad(set_to_none=True)
        diffusion_row_loss(unet, stack(album)).mean().backward()
        reference.append([p.grad.detach().clone() for p in params])
    unet.zero_grad(set_to_none=True)
    wrapped, guards = wrap_for_dp(unet)
    try:
        got = album_gradients(wrapped, params, frozen, diffusion_row_loss, stack,
                              physical_batch_rows=2)
    finally:
        unwrap_dp(wrapped, guards)
    worst = max(((g - r).abs().max() / (r.abs().max() + 1e-12)).item()
                for a, ref in enumerate(reference) for g, r in zip(got[a], ref))
    assert worst < 1e-4
