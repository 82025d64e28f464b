"""Sampling speed: the pipeline's hierarchical sampler vs the loops a user would write instead.

All sample the same albums (one summary, then k captions conditioned on it) from the same models
in the same process, with the same temperature / top-p / length caps:

- ``batched``: ``dpalbum.models.sampler.sample_album_texts``, i.e. what ``kedro run`` uses
  (prompts pooled across albums, left-padded batches, KV cache);
- ``album_batched``: what a competent user writes with Hugging Face alone: per album, one
  ``generate`` for its summary, then ONE ``generate`` with ``num_return_sequences=k`` for its k
  captions (the baseline the target is set against: >= 3x);
- ``naive``: one ``generate`` call per summary and per caption (KV cache on too).

``--models DIR`` samples from the pipeline's own trained LMs (``DIR/summary_lm``,
``DIR/caption_lm``, ``DIR/lm_tokenizer``, e.g. ``data/06_models`` after a default run); without
it, a tiny random GPT-2 over the demo world's words (which rarely emits eos, so every text runs
to ``max_new_tokens``). Generated tokens are reported as a check.

    .venv/bin/python benchmarks/sampling.py --models data/06_models   # the pipeline's LMs
    .venv/bin/python benchmarks/sampling.py            # writes benchmarks/results/sampling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from dpalbum.albums import vocabulary
from dpalbum.models.sampler import SamplingConfig, album_seed, sample_album_texts
from dpalbum.models.text_format import SpecialTokens, caption_prompt

RESULTS = Path(__file__).resolve().parent / "results" / "sampling.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-albums", type=int, default=32)
    parser.add_argument("--min-photos", type=int, default=4)
    parser.add_argument("--max-photos", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=24, help="per summary and caption")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: stable timings on a shared machine)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", type=Path, default=None,
                        help="folder with summary_lm/, caption_lm/, lm_tokenizer/ (a run's "
                             "data/06_models); default: a tiny random GPT-2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def demo_world_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the demo world's public vocabulary (no hub, no private text)."""
    words = ["a", "an", "the", "in", "with", "and", "of", "at", *vocabulary.SCENES,
             *vocabulary.COLOURS, *vocabulary.SHAPES, *vocabulary.OBJECTS,
             *(w for event in vocabulary.EVENTS for w in event.split())]
    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(specials + words))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="[BOS]", eos_token="[EOS]",
                                   sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]")


def tiny_model(tokenizer, args: argparse.Namespace) -> GPT2LMHeadModel:
    torch.manual_seed(args.seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=2 * args.max_new_tokens + 4, n_embd=args.n_embd,
        n_layer=args.n_layer, n_head=args.n_head, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config).to(args.device).eval()


def album_batched_loop(summary_lm, caption_lm, tokenizer, sizes: list[int],
                       args: argparse.Namespace, per_caption: bool = False) -> dict:
    """Per album: one generate for its summary, one (num_return_sequences=k) for its k captions;
    ``per_caption``: one generate per caption instead (the naive loop, with two models)."""
    tokens = SpecialTokens.of(tokenizer)
    config = GenerationConfig(
        do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0,
        max_new_tokens=args.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, use_cache=True,
    )
    torch.manual_seed(args.seed)
    calls = generated = 0

    def generate(model, prompt: str, k: int) -> list[str]:
        nonlocal calls, generated
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(input_ids=ids.to(args.device),
                             attention_mask=torch.ones_like(ids).to(args.device),
                             generation_config=config, num_return_sequences=k)[:, ids.shape[1]:]
        texts = []
        for row in out.tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            generated += len([t for t in row if t != tokenizer.pad_token_id])
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        calls += 1
        return texts

    started = time.perf_counter()
    with torch.inference_mode():
        captions = 0
        for size in sizes:
            summary = generate(summary_lm, tokens.bos, 1)[0]
            prompt = caption_prompt(summary, tokens)
            captions += sum(len(generate(caption_lm, prompt, 1)) for _ in range(size)) \
                if per_caption else len(generate(caption_lm, prompt, size))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "captions": captions, "generate_calls": calls,
            "generated_tokens": generated, "captions_per_s": captions / seconds}


def batched(model, tokenizer, config: SamplingConfig, caption_model=None) -> dict:
    calls = 0
    models = [model] if caption_model in (None, model) else [model, caption_model]

    def counting(original):
        def generate(*a, **k):
            nonlocal calls
            calls += 1
            return original(*a, **k)
        return generate

    for m in models:
        m.generate = counting(m.generate)
    try:
        started = time.perf_counter()
        albums, metadata = sample_album_texts(model, caption_model or model, tokenizer, config)
        seconds = time.perf_counter() - started
    finally:
        for m in models:
            del m.generate
    captions = sum(len(a.captions) for a in albums)
    return {"seconds": seconds, "captions": captions, "generate_calls": calls,
            "generated_tokens": metadata["generated_tokens"], "captions_per_s": captions / seconds,
            "sizes": [len(a.captions) for a in albums]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()  # a random model samples [PAD]: HF warns, harmless
    torch.set_num_threads(args.threads)
    if args.models:
        from transformers import AutoModelForCausalLM

        from dpalbum.models.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(str(args.models / "lm_tokenizer"))
        model = AutoModelForCausalLM.from_pretrained(str(args.models / "summary_lm")).eval()
        caption_model = AutoModelForCausalLM.from_pretrained(str(args.models / "caption_lm")).eval()
        model_name = (f"the pipeline's trained LMs ({model.config.model_type} "
                      f"{model.config.n_layer}x{model.config.n_embd}, vocab {len(tokenizer)})")
    else:
        tokenizer = demo_world_tokenizer()
        model = tiny_model(tokenizer, args)
        caption_model = model
        model_name = f"random GPT-2 {args.n_layer}x{args.n_embd}, vocab {len(tokenizer)}"
    config = SamplingConfig(
        n_albums=args.n_albums, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
        batch_size=args.batch_size, show_progress=False,
        photos_per_album={"min": args.min_photos, "max": args.max_photos},
        max_new_tokens={"summary": args.max_new_tokens, "caption": args.max_new_tokens},
    )
    warm = SamplingConfig(**{**config.__dict__, "n_albums": 2})
    # first calls pay one-off costs: keep them out of every timing
    batched(model, tokenizer, warm, caption_model)
    album_batched_loop(model, caption_model, tokenizer, [2], args)

    fast = batched(model, tokenizer, config, caption_model)
    sizes = fast.pop("sizes")  # the same album sizes for every path
    per_album = album_batched_loop(model, caption_model, tokenizer, sizes, args)
    slow = album_batched_loop(model, caption_model, tokenizer, sizes, args, per_caption=True)
    assert fast["captions"] == slow["captions"] == per_album["captions"]
    result = {
        "benchmark": "sampling: batched hierarchical sampler vs an album-batched generate loop "
                     "(num_return_sequences=k per album) and a per-caption loop",
        "speedup_captions_per_s": round(fast["captions_per_s"] / per_album["captions_per_s"], 2),
        "speedup_vs_naive": round(fast["captions_per_s"] / slow["captions_per_s"], 2),
        "target": 3.0,
        "baseline": "album_batched",
        "batched": fast,
        "album_batched": per_album,
        "naive": slow,
        "setup": {
            "device": args.device, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "model": model_name, "n_albums": args.n_albums,
            "photos_per_album": [args.min_photos, args.max_photos],
            "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
            "first_album_seed": album_seed(args.seed, 0),
        },
        # repo-relative, so no machine path lands in the committed results
        "command": " ".join(["python", *(os.path.relpath(a, RESULTS.parents[2])
                                         if os.path.isabs(a) else a for a in sys.argv)]),
    }
    result["meets_target"] = result["speedup_captions_per_s"] >= result["target"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"batched {fast['captions_per_s']:.1f} captions/s ({fast['generate_calls']} generate "
          f"calls), album-batched {per_album['captions_per_s']:.1f} captions/s "
          f"({per_album['generate_calls']} calls): {result['speedup_captions_per_s']}x; naive "
          f"{slow['captions_per_s']:.1f} captions/s: {result['speedup_vs_naive']}x -> {args.out}")
    return result


if __name__ == "__main__":
    main()
