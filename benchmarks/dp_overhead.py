"""DP-SGD overhead: step time and peak memory of album-level DP-SGD relative to non-private
training, same model, same Poisson-sampled batches of albums, measured in one run.

Models: a tiny GPT-2 with LoRA on c_attn (the LM role), a tiny UNet2DConditionModel, and the
renderer's own full-parameter UNet at its default shape (``renderer``: ``build_unet`` with
conf/base/parameters_rendering.yml's architecture, 2x2 patches of 32x32 images, MiniLM-sized
conditioning, ``diffusion_row_loss``). Modes per model, fed the *same* sampled album batches,
interleaved step by step:
  nonprivate   plain autograd, same expected batch and loss scaling (the ε = inf baseline step)
  dp_album     dpalbum's step: Opacus per-row gradients summed per album, one clip per album
  dp_example   the same step with every row its own unit (example-level clipping), to price
               the album-level summation
  dp_ghost     the album-level step by ghost clipping (privacy/ghost_clipping.py): album norms
               from activations and output gradients, no per-row gradients
Time: wall-clock per step, one torch thread by default; ratios are medians over steps of the
paired ratio (both modes on the same batch, back to back), robust to a shared machine's load,
with a 95% interval for the geometric mean of the paired ratios (t interval on log ratios).
Memory: peak resident set size (Linux VmHWM) of a fresh subprocess per (model, mode), reset with
/proc/self/clear_refs after the model is built, so it is the peak *during training steps*; the
increment over the post-setup RSS is reported too. glibc is told to mmap blocks ≥ 64 KiB so RSS
follows live tensors. CPU RSS stands in for accelerator memory.

    .venv/bin/python benchmarks/dp_overhead.py            # a few minutes on a laptop CPU
Writes benchmarks/results/dp_overhead.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dpalbum.privacy import PoissonAlbumSampler, unwrap_dp, wrap_for_dp
from dpalbum.privacy.dpsgd import nonprivate_step, private_step

MODES = ("nonprivate", "dp_album", "dp_example", "dp_ghost")
RESULTS = Path(__file__).resolve().parent / "results" / "dp_overhead.json"


# ---- the two models, their rows and losses ----------------------------------------------------
def build_lm(args: argparse.Namespace) -> nn.Module:
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_positions=args.seq_len, n_embd=128, n_layer=2,
                        n_head=4, bos_token_id=0, eos_token_id=0)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True,
                      lora_dropout=0.0)
    return get_peft_model(GPT2LMHeadModel(config), lora)


def lm_rows(args: argparse.Namespace, n: int, g: torch.Generator) -> list[torch.Tensor]:
    return [torch.randint(0, args.vocab, (args.seq_len,), generator=g) for _ in range(n)]


def lm_collate(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(rows)  # (B, T)


def lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
    ce = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="none"
    )
    return ce.view(ids.shape[0], -1).mean(1)  # (B,)


def build_unet(args: argparse.Namespace) -> nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=args.latent, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8,
    )


def unet_rows(args: argparse.Namespace, n: int, g: torch.Generator) -> list[tuple]:
    s = args.latent
    return [(torch.randn(4, s, s, generator=g), torch.randint(0, 1000, (), generator=g),
             torch.randn(8, 32, generator=g), torch.randn(4, s, s, generator=g))
            for _ in range(n)]


def unet_collate(rows: list[tuple]) -> tuple[torch.Tensor, ...]:
    x, t, c, y = (torch.stack(parts) for parts in zip(*rows))
    return x, t, c, y


def unet_loss(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, t, c, y = batch
    return ((model(x, t, encoder_hidden_states=c).sample - y) ** 2).flatten(1).mean(1)  # (B,)


def build_renderer(args: argparse.Namespace) -> nn.Module:
    from dpalbum.models.renderer import build_unet

    torch.manual_seed(0)
    return build_unet(renderer_config(), text_dim=TEXT_DIM)


def renderer_config():
    """The renderer's default architecture, read from conf/base/parameters_rendering.yml."""
    import yaml

    from dpalbum.models.renderer import RendererConfig

    conf = Path(__file__).resolve().parents[1] / "conf" / "base" / "parameters_rendering.yml"
    shape = yaml.safe_load(conf.read_text())["rendering"]["renderer"]
    keys = ("patch_size", "block_out_channels", "attention_levels", "layers_per_block",
            "attention_head_dim", "norm_num_groups", "max_prompt_tokens")
    return RendererConfig(image_size=32, **{k: shape[k] for k in keys})  # globals: image_size 32


TEXT_DIM = 384  # the public MiniLM's width: token states and pooled sentence embedding


def renderer_rows(args: argparse.Namespace, n: int, g: torch.Generator) -> list[dict]:
    config = renderer_config()
    c, s, t = 3 * config.patch_size ** 2, 32 // config.patch_size, config.max_prompt_tokens
    return [{"noisy": torch.randn(c, s, s, generator=g),
             "noise": torch.randn(c, s, s, generator=g),
             "timesteps": torch.randint(0, 1000, (), generator=g),
             "weights": torch.rand((), generator=g) + 0.5,  # min-SNR weights vary per row
             "tokens": torch.randn(t, TEXT_DIM, generator=g),
             "mask": (torch.arange(t) < torch.randint(4, t, (), generator=g)).float(),
             "pooled": torch.randn(TEXT_DIM, generator=g)} for _ in range(n)]


def renderer_collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def renderer_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    from dpalbum.models.renderer import diffusion_row_loss

    return diffusion_row_loss(model, batch)  # (B,)


MODELS = {
    "gpt2_lora": (build_lm, lm_rows, lm_collate, lm_loss),
    "unet": (build_unet, unet_rows, unet_collate, unet_loss),
    "renderer": (build_renderer, renderer_rows, renderer_collate, renderer_loss),
}


# ---- one model in one mode ----------------------------------------------------------------------
class Runner:
    """A model copy, its optimizer and the step function of one mode."""

    def __init__(self, model: nn.Module, mode: str, args: argparse.Namespace, loss, collate):
        self.mode, self.args, self.loss, self.collate = mode, args, loss, collate
        self.model = model
        self.model.train()
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4)
        self.wrapped, self.guards = (
            (model, []) if mode == "nonprivate"
            else wrap_for_dp(model, "ghost" if mode == "dp_ghost" else "hooks")
        )
        self.noise = np.random.default_rng(1)  # timing only: nothing is released

    def step(self, albums: list[list[Any]]) -> None:
        common = {"expected_batch": self.args.batch_albums, "device": torch.device("cpu"),
                  "physical_batch_rows": self.args.physical_rows, "album_reduction": "mean"}
        if self.mode == "nonprivate":
            nonprivate_step(self.model, self.optimizer, albums, self.loss, self.collate, **common)
            return
        if self.mode == "dp_example":  # every row its own unit: Opacus' example-level clipping
            albums = [[row] for rows in albums for row in rows]
        private_step(self.wrapped, self.params, self.optimizer, albums, self.loss, self.collate,
                     noise_multiplier=1.0, max_grad_norm=1.0, noise_generator=self.noise,
                     **common)

    def close(self) -> None:
        if self.mode != "nonprivate":
            unwrap_dp(self.wrapped, self.guards)


def make_batches(args: argparse.Namespace, rows_fn, n_steps: int) -> list[list[list[Any]]]:
    """The same Poisson-sampled album batches for every mode (rows per album 2..6)."""
    g = torch.Generator().manual_seed(0)
    sizes = torch.randint(2, 7, (args.n_albums,), generator=g).tolist()
    sampler = PoissonAlbumSampler(args.n_albums, args.batch_albums / args.n_albums,
                                  np.random.default_rng(0))  # a benchmark: seeded on purpose
    albums: dict[int, list[Any]] = {}
    batches = []
    for _ in range(n_steps):
        ids = sampler.sample()
        for i in ids:
            if i not in albums:
                albums[i] = rows_fn(args, sizes[i], g)
        batches.append([albums[i] for i in ids])
    return batches


def time_model(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Interleave the modes step by step on the same batches; median seconds per step."""
    build, rows_fn, collate, loss = MODELS[name]
    base = build(args)
    modes = args.modes.split(",")
    runners = {m: Runner(copy.deepcopy(base), m, args, loss, collate) for m in modes}
    batches = make_batches(args, rows_fn, args.warmup + args.steps)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i, batch in enumerate(batches):
        order = list(runners.items())
        if i % 2:  # alternate the order, so neither mode always runs right after the other
            order.reverse()
        for mode, runner in order:
            start = time.perf_counter()
            runner.step(batch)
            if i >= args.warmup:
                times[mode].append(time.perf_counter() - start)
    for runner in runners.values():
        runner.close()
    rows = [sum(len(a) for a in b) for b in batches[args.warmup:]]
    median = {m: statistics.median(t) for m, t in times.items()}

    def paired(a: str, b: str) -> float:
        """Median over steps of time(a)/time(b) on the same batch: robust to load swings."""
        return statistics.median(x / y for x, y in zip(times[a], times[b]))

    def interval(a: str, b: str) -> list[float]:
        """95% t interval for the geometric mean of the paired ratios a/b."""
        logs = [math.log(x / y) for x, y in zip(times[a], times[b])]
        half = _T975.get(len(logs) - 1, 1.96) * statistics.stdev(logs) / math.sqrt(len(logs))
        mean = statistics.mean(logs)
        return [math.exp(mean - half), math.exp(mean), math.exp(mean + half)]

    dp = [m for m in modes if m != "nonprivate"]
    out = {
        "trainable_params": sum(p.numel() for p in base.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in base.parameters()),
        "mean_rows_per_step": statistics.mean(rows),
        "mean_albums_per_step": statistics.mean(len(b) for b in batches[args.warmup:]),
        "step_seconds_median": median,
        "step_seconds_mean": {m: statistics.mean(t) for m, t in times.items()},
        "step_seconds_min": {m: min(t) for m, t in times.items()},
        **{f"time_ratio_{m}_vs_nonprivate": paired(m, "nonprivate") for m in dp},
        "time_ratio_ci95_geomean": {f"{m}_vs_nonprivate": interval(m, "nonprivate") for m in dp},
    }
    if "dp_album" in modes and "dp_example" in modes:
        out["time_ratio_album_vs_example_clipping"] = paired("dp_album", "dp_example")
    if "dp_album" in modes and "dp_ghost" in modes:
        out["time_ratio_dp_ghost_vs_dp_album"] = paired("dp_ghost", "dp_album")
        out["time_ratio_ci95_geomean"]["dp_ghost_vs_dp_album"] = interval("dp_ghost", "dp_album")
    return out


# two-sided 95% t quantiles by degrees of freedom (the normal 1.96 beyond)
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
         10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04, 40: 2.02, 60: 2.00}


# ---- memory: one fresh subprocess per (model, mode) ----------------------------------------------
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_probe(name: str, mode: str, args: argparse.Namespace) -> dict[str, float]:
    """Peak RSS during ``args.memory_steps`` steps of one mode (run inside a fresh process)."""
    build, rows_fn, collate, loss = MODELS[name]
    runner = Runner(build(args), mode, args, loss, collate)
    batches = make_batches(args, rows_fn, args.memory_steps)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    setup_kb = _status_kb("VmRSS")
    for batch in batches:
        runner.step(batch)
    peak_kb = _status_kb("VmHWM")
    return {"peak_rss_mb": peak_kb / 1024, "setup_rss_mb": setup_kb / 1024,
            "training_increment_mb": (peak_kb - setup_kb) / 1024}


def measure_memory(name: str, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Large blocks via mmap are returned to the OS when freed, so RSS follows live tensors
    # instead of glibc's cached arenas.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_ARENA_MAX": "1"}
    modes = args.modes.split(",")
    for mode in modes:
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--memory-probe", f"{name}:{mode}"],
            capture_output=True, text=True, check=True, env=env,
        )
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    peak = {m: out[m]["peak_rss_mb"] for m in modes}
    inc = {m: out[m]["training_increment_mb"] for m in modes}
    result: dict[str, Any] = {"per_mode": out}
    for m in modes[1:] if modes[0] == "nonprivate" else []:
        result[f"peak_ratio_{m}_vs_nonprivate"] = peak[m] / peak["nonprivate"]
        result[f"increment_ratio_{m}_vs_nonprivate"] = inc[m] / inc["nonprivate"]
    if "dp_album" in modes and "dp_example" in modes:
        result["increment_ratio_album_vs_example_clipping"] = inc["dp_album"] / inc["dp_example"]
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gpt2_lora,unet,renderer")
    ap.add_argument("--modes", default=",".join(MODES), help="nonprivate first")
    ap.add_argument("--n-albums", type=int, default=256)
    ap.add_argument("--batch-albums", type=float, default=16, help="expected batch (albums)")
    ap.add_argument("--physical-rows", type=int, default=256, help="rows per forward pass")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--memory-steps", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--latent", type=int, default=16, help="UNet latent side")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        name, mode = args.memory_probe.split(":")
        print(json.dumps(memory_probe(name, mode, args)))
        return
    base_argv = [a for a in argv if a != "--skip-memory"]
    report: dict[str, Any] = {
        "what": "DP-SGD step time and peak memory over non-private, same model and batches",
        "time_measure": "wall-clock per step, modes interleaved on the same batches; ratios are "
                        "medians of per-step paired ratios",
        "memory_measure": "Linux VmHWM (peak RSS) of a fresh subprocess per mode, reset after "
                          "model setup via /proc/self/clear_refs; MALLOC_MMAP_THRESHOLD_=65536",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("out", "memory_probe")},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "models": {},
    }
    for name in args.models.split(","):
        started = time.time()
        entry = time_model(name, args)
        if not args.skip_memory and Path("/proc/self/clear_refs").exists():
            entry["memory"] = measure_memory(name, args, base_argv)
        entry["benchmark_seconds"] = time.time() - started
        report["models"][name] = entry
        ratios = entry["time_ratio_ci95_geomean"]
        print(f"{name}: time ratios (geomean [95% CI]) "
              + ", ".join(f"{k} {v[1]:.2f} [{v[0]:.2f}, {v[2]:.2f}]" for k, v in ratios.items())
              + (", peak memory " + ", ".join(
                  f"{k[len('peak_ratio_'):]} {v:.2f}x" for k, v in entry["memory"].items()
                  if k.startswith("peak_ratio_")) if "memory" in entry else ""), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
