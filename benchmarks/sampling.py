"""Sampling speed: the pipeline's hierarchical sampler vs a naive per-album, per-caption loop.

Both sample the same albums (one summary, then k captions conditioned on it) from the same tiny,
randomly initialised GPT-2 in the same process, with the same temperature / top-p / length caps:

- ``batched``: ``dpalbum.models.sampler.sample_album_texts``, i.e. what ``kedro run`` uses
  (prompts pooled across albums, left-padded batches, KV cache);
- ``naive``: one ``model.generate`` call per summary and per caption (KV cache on too).

Reports captions/s for each and the speed-up (target >= 10x). A random model rarely emits eos, so
both paths generate close to ``max_new_tokens`` per text; generated tokens are reported as a check.

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


def naive_loop(model, tokenizer, sizes: list[int], args: argparse.Namespace) -> dict:
    """One generate call per summary, then one per caption of that album."""
    tokens = SpecialTokens.of(tokenizer)
    config = GenerationConfig(
        do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=0,
        max_new_tokens=args.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, use_cache=True,
    )
    torch.manual_seed(args.seed)
    calls = generated = 0

    def generate(prompt: str) -> str:
        nonlocal calls, generated
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(input_ids=ids.to(args.device),
                             attention_mask=torch.ones_like(ids).to(args.device),
                             generation_config=config)[0, ids.shape[1]:].tolist()
        if tokenizer.eos_token_id in out:
            out = out[: out.index(tokenizer.eos_token_id) + 1]
        calls, generated = calls + 1, generated + len(out)
        return tokenizer.decode(out, skip_special_tokens=True)

    started = time.perf_counter()
    with torch.inference_mode():
        captions = 0
        for size in sizes:
            summary = generate(tokens.bos)
            for _ in range(size):
                generate(caption_prompt(summary, tokens))
                captions += 1
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "captions": captions, "generate_calls": calls,
            "generated_tokens": generated, "captions_per_s": captions / seconds}


def batched(model, tokenizer, config: SamplingConfig) -> dict:
    calls = 0
    original = model.generate

    def counting_generate(*a, **k):
        nonlocal calls
        calls += 1
        return original(*a, **k)

    model.generate = counting_generate
    try:
        started = time.perf_counter()
        albums, metadata = sample_album_texts(model, model, tokenizer, config)
        seconds = time.perf_counter() - started
    finally:
        del model.generate
    captions = sum(len(a.captions) for a in albums)
    return {"seconds": seconds, "captions": captions, "generate_calls": calls,
            "generated_tokens": metadata["generated_tokens"], "captions_per_s": captions / seconds,
            "sizes": [len(a.captions) for a in albums]}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()  # a random model samples [PAD]: HF warns, harmless
    torch.set_num_threads(args.threads)
    tokenizer = demo_world_tokenizer()
    model = tiny_model(tokenizer, args)
    config = SamplingConfig(
        n_albums=args.n_albums, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
        batch_size=args.batch_size, show_progress=False,
        photos_per_album={"min": args.min_photos, "max": args.max_photos},
        max_new_tokens={"summary": args.max_new_tokens, "caption": args.max_new_tokens},
    )
    warm = SamplingConfig(**{**config.__dict__, "n_albums": 2})
    batched(model, tokenizer, warm)  # first calls pay one-off costs: keep them out of both timings
    naive_loop(model, tokenizer, [1], args)

    fast = batched(model, tokenizer, config)
    slow = naive_loop(model, tokenizer, fast.pop("sizes"), args)  # the same album sizes
    assert fast["captions"] == slow["captions"]
    result = {
        "benchmark": "sampling: batched hierarchical sampler vs naive per-caption generate loop",
        "speedup_captions_per_s": round(fast["captions_per_s"] / slow["captions_per_s"], 2),
        "target": 10.0,
        "batched": fast,
        "naive": slow,
        "setup": {
            "device": args.device, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "model": f"random GPT-2 {args.n_layer}x{args.n_embd}, "
            f"vocab {len(tokenizer)}", "n_albums": args.n_albums,
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
          f"calls), naive {slow['captions_per_s']:.1f} captions/s ({slow['generate_calls']} "
          f"calls): {result['speedup_captions_per_s']}x -> {args.out}")
    return result


if __name__ == "__main__":
    main()
