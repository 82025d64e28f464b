"""DP-SGD overhead: step time and peak memory of album-level DP-SGD relative to non-private
training, same model, same Poisson-sampled batches of albums, measured in one run.

Models: a tiny GPT-2 with LoRA on c_attn (the LM role) and a tiny UNet2DConditionModel (the
renderer role). Modes per model, fed the *same* sampled album batches, interleaved step by step:
  nonprivate   plain autograd, same expected batch and loss scaling (the ε = inf baseline step)
  dp_album     dpalbum's step: Opacus per-row gradients summed per album, one clip per album
  dp_example   the same step with every row its own unit (example-level clipping), to price
               the album-level summation
Time: wall-clock per step, one torch thread by default; ratios are medians over steps of the
paired ratio (both modes on the same batch, back to back), robust to a shared machine's load.
Memory: peak resident set size (Linux VmHWM) of a fresh subprocess per (model, mode), reset with
/proc/self/clear_refs after the model is built, so it is the peak *during training steps*; the
increment over the post-setup RSS is reported too. glibc is told to mmap blocks ≥ 64 KiB so RSS
follows live tensors. CPU RSS stands in for accelerator memory.

    .venv/bin/python benchmarks/dp_overhead.py            # ~1-2 min on a laptop CPU
Writes benchmarks/results/dp_overhead.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpalbum.privacy import PoissonAlbumSampler, unwrap_dp, wrap_for_dp
from dpalbum.privacy.dpsgd import nonprivate_step, private_step

MODES = ("nonprivate", "dp_album", "dp_example")
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


MODELS = {
    "gpt2_lora": (build_lm, lm_rows, lm_collate, lm_loss),
    "unet": (build_unet, unet_rows, unet_collate, unet_loss),
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
            (model, []) if mode == "nonprivate" else wrap_for_dp(model, "hooks")
        )
        self.noise = torch.Generator().manual_seed(1)

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
    sampler = PoissonAlbumSampler(args.n_albums, args.batch_albums / args.n_albums, seed=0)
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
    runners = {m: Runner(copy.deepcopy(base), m, args, loss, collate) for m in MODES}
    batches = make_batches(args, rows_fn, args.warmup + args.steps)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for i, batch in enumerate(batches):
        for mode, runner in runners.items():
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

    return {
        "trainable_params": sum(p.numel() for p in base.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in base.parameters()),
        "mean_rows_per_step": statistics.mean(rows),
        "mean_albums_per_step": statistics.mean(len(b) for b in batches[args.warmup:]),
        "step_seconds_median": median,
        "step_seconds_mean": {m: statistics.mean(t) for m, t in times.items()},
        "step_seconds_min": {m: min(t) for m, t in times.items()},
        "time_ratio_dp_album_vs_nonprivate": paired("dp_album", "nonprivate"),
        "time_ratio_dp_example_vs_nonprivate": paired("dp_example", "nonprivate"),
        "time_ratio_album_vs_example_clipping": paired("dp_album", "dp_example"),
    }


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
    for mode in MODES:
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--memory-probe", f"{name}:{mode}"],
            capture_output=True, text=True, check=True, env=env,
        )
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    peak = {m: out[m]["peak_rss_mb"] for m in MODES}
    inc = {m: out[m]["training_increment_mb"] for m in MODES}
    return {
        "per_mode": out,
        "peak_ratio_dp_album_vs_nonprivate": peak["dp_album"] / peak["nonprivate"],
        "increment_ratio_dp_album_vs_nonprivate": inc["dp_album"] / inc["nonprivate"],
        "increment_ratio_album_vs_example_clipping": inc["dp_album"] / inc["dp_example"],
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="gpt2_lora,unet")
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
        print(f"{name}: time dp_album/nonprivate {entry['time_ratio_dp_album_vs_nonprivate']:.2f}"
              f"x, album/example clipping {entry['time_ratio_album_vs_example_clipping']:.2f}x"
              + (f", peak memory dp_album/nonprivate "
                 f"{entry['memory']['peak_ratio_dp_album_vs_nonprivate']:.2f}x"
                 if "memory" in entry else ""), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
