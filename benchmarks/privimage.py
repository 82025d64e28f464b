"""PRIVIMAGE in miniature: does pre-training the renderer on the semantically selected public
subset beat pre-training on all public data, or none, once each is DP fine-tuned on the private
photos at the same total ε?

One demo world is generated in a temp dir (public corpus, private albums, held-out private albums;
``dpalbum.albums.demo_world`` through the demo_world pipeline's nodes). Three arms, each a fresh
embedded renderer:

- ``semantic``: the dp_training pipeline's PRIVIMAGE query (Gaussian, album-level top-k histogram
  of public labels, charged to the arm's ledger) selects ≤ 10% of the public corpus, which the
  renderer is pre-trained on;
- ``all``: pre-trained on the whole public corpus;
- ``none``: no pre-training (random init).

``semantic`` and ``all`` get the same pre-training compute (same steps and batch size). Every arm
is then DP-SGD fine-tuned on the private photos and their captions with the rendering pipeline's
node (album-level clipping, Poisson sampling over albums, through ``dpalbum.privacy``), so that
the arm's whole ledger (query + fine-tune, or fine-tune alone) composes to ε = 10; each ledger is
checked by the project's own ``scripts/verify_ledger.py`` (and ``shared/tools/verify_ledger.py``
as well when the team's workspace has it). Each arm is an alternative run on the same albums, so
each charges its own privacy account (in the temp dir). The number of albums is declared public
(the demo world's N is known) and the noise is replayable from ``--seed`` (see
``replayable_noise``): the ledgers say ``"noise_source": "replayable"``, i.e. NOT differentially
private as released; fine for a benchmark, which measures utility at a given ε.

Metrics, per arm, on images rendered from the same prompts (captions of fresh albums drawn from the
private distribution: what an ideal DP text path would sample; rendered by the rendering
pipeline's node):

- local FD: Fréchet distance between rendered images and held-out private photos on the
  evaluation network's features (trained on PUBLIC images only, as the evaluation pipeline does);
  local, not comparable to published FID;
- downstream accuracy: a classifier (the evaluation pipeline's logistic regression on those
  features) trained on the rendered images with the protagonist / scene parsed from their prompts,
  tested on the held-out private photos' true labels.

References: the same metrics for real private photos (FD floor; train-on-real accuracy).

    .venv/bin/python benchmarks/privimage.py            # ~10 min on 2 busy CPU cores
    .venv/bin/python benchmarks/privimage.py --quick    # smoke version, ~1-2 min
Writes benchmarks/results/privimage.json (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dpalbum import privacy
from dpalbum.albums.dataset import AlbumFolderDataset
from dpalbum.albums.demo_world import DemoWorldConfig, plan_private_albums
from dpalbum.albums.model import AlbumSet
from dpalbum.albums.vocabulary import caption_for, parse_caption
from dpalbum.models.evaluation_network import EvaluationNetworkConfig, train_evaluation_network
from dpalbum.models.summariser import template_summary
from dpalbum.pipelines.demo_world.nodes import generate_public_corpus, render_planned_albums
from dpalbum.pipelines.dp_training.nodes import (
    public_caption_labels_node,
    select_public_node,
    semantic_query_node,
)
from dpalbum.pipelines.evaluation.metrics import fit_and_score, frechet_distance
from dpalbum.pipelines.rendering.nodes import (
    RenderingParams,
    dp_finetune_renderer_node,
    pretrain_renderer_node,
    render_albums_node,
    select_renderer_pretraining_data_node,
)
from dpalbum.privacy.randomness import SEED_ENV

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "privimage.json"
VERIFIER = ROOT / "scripts" / "verify_ledger.py"  # the project's own, always run
SHARED_VERIFIER = ROOT.parent / "shared" / "tools" / "verify_ledger.py"  # also run if present
ARMS = ("semantic", "all", "none")
TASKS = ("protagonist", "scene")
QUICK = {  # the smoke version: every code path, tiny sizes
    "n_public": 1200, "n_private": 24, "n_heldout": 8, "n_prompt_albums": 8, "image_size": 16,
    "channels": [8, 16], "pretrain_steps": 6, "batch_size": 8, "dp_batch_albums": 8,
    "dp_epochs": 1, "inference_steps": 3, "eval_epochs": 1, "eval_channels": [8, 16],
    "eval_feature_dim": 32, "eval_train_images": 600, "bootstrap": 10,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke version (tiny sizes, ~1-2 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epsilon", type=float, default=10.0, help="total ε of every arm")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--query-share", type=float, default=0.1,
                    help="share of ε the semantic arm spends on the query (the pipeline's "
                         "privacy.shares.semantic_query is 0.1 of the whole budget)")
    ap.add_argument("--selection-fraction", type=float, default=0.1,
                    help="share of the public corpus the query selects (PRIVIMAGE: <= 10%%)")
    # the world
    ap.add_argument("--n-public", type=int, default=20000, help="as the embedded default")
    ap.add_argument("--n-private", type=int, default=150, help="private albums (the DP unit)")
    ap.add_argument("--n-heldout", type=int, default=40, help="held-out private albums")
    ap.add_argument("--n-prompt-albums", type=int, default=40,
                    help="fresh private-distribution albums whose captions are rendered")
    ap.add_argument("--image-size", type=int, default=32)
    # the renderer (the embedded renderer at half the shipped width: CPU time)
    ap.add_argument("--channels", type=int, nargs="+", default=[16, 32, 32])
    ap.add_argument("--pretrain-steps", type=int, default=300,
                    help="pre-training steps, equal for the semantic and all arms")
    ap.add_argument("--batch-size", type=int, default=32, help="pre-training batch")
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--dp-batch-albums", type=int, default=30, help="expected albums per step")
    ap.add_argument("--dp-epochs", type=float, default=2.0, help="steps = epochs / q")
    ap.add_argument("--dp-lr", type=float, default=1e-3)
    ap.add_argument("--inference-steps", type=int, default=10)
    # the evaluation network (public images only)
    ap.add_argument("--eval-epochs", type=int, default=4)
    ap.add_argument("--eval-channels", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--eval-feature-dim", type=int, default=128)
    ap.add_argument("--eval-train-images", type=int, default=4000)
    ap.add_argument("--bootstrap", type=int, default=50,
                    help="resamples of the images for the local FD's interval (0: none)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("DPALBUM_TORCH_THREADS", 1)),
                    help="torch CPU threads (the box is shared)")
    ap.add_argument("--verifier", type=Path, default=VERIFIER,
                    help="verify_ledger.py (the shared one also runs when it exists)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:  # quick sizes replace the defaults (explicit flags are not told apart)
        for key, value in QUICK.items():
            setattr(args, key, value)
    if not 0 < args.query_share < 1:
        ap.error("--query-share must be in (0, 1)")
    return args


# ---------------------------------------------------------------- the world


def make_world(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Public corpus, private and held-out albums (written to and read back from ``folder`` as
    the pipeline does), their captions, and the prompt albums."""
    config = DemoWorldConfig(seed=args.seed, image_size=args.image_size,
                             n_public_images=args.n_public, n_private_albums=args.n_private,
                             n_heldout_albums=args.n_heldout)
    public = generate_public_corpus(config)
    splits = {}
    for split, n in (("train", args.n_private), ("heldout", args.n_heldout)):
        plans = plan_private_albums(config, split, n)
        dataset = AlbumFolderDataset(str(folder / split), image_size=args.image_size)
        dataset.save(render_planned_albums(plans, config))
        albums = dataset.load()
        by_id = {p.album_id: p for p in plans}
        # The captions an ideal public captioner writes (the shipped one is ~100% on the demo
        # world); photo order as in the album folders.
        captions = {a.album_id: [caption_for(by_id[a.album_id].protagonist, ph.scene,
                                             list(ph.objects)) for ph in by_id[a.album_id].photos]
                    for a in albums}
        splits[split] = (albums, captions)
    # Prompts: captions of fresh albums of the private distribution (another seed), the same for
    # every arm: what the DP text path would ideally sample.
    prompt_plans = plan_private_albums(
        DemoWorldConfig(seed=args.seed + 1, image_size=args.image_size), "train",
        args.n_prompt_albums)
    prompts = [[caption_for(p.protagonist, ph.scene, list(ph.objects)) for ph in p.photos]
               for p in prompt_plans]
    curated = pd.DataFrame({"album_id": [p.album_id for p in prompt_plans],
                            "summary": [template_summary(c) for c in prompts],
                            "captions": prompts})
    train, train_captions = splits["train"]
    album_texts = pd.DataFrame({"album_id": [a.album_id for a in train],
                                "captions": [train_captions[a.album_id] for a in train]})
    return {"public": public, "train": train, "album_texts": album_texts,
            "heldout": splits["heldout"], "curated": curated}


def _photo_labels(albums: AlbumSet, captions: dict[str, list[str]]) -> tuple[list, dict]:
    images, labels = [], {t: [] for t in TASKS}
    for album in albums:
        for photo, caption in zip(album.photos, captions[album.album_id]):
            images.append(photo.image)
            for task, value in _labels(caption).items():
                labels[task].append(value)
    return images, labels


def _labels(caption: str) -> dict[str, str]:
    parsed = parse_caption(caption)
    return {"protagonist": f"{parsed['colour']} {parsed['shape']}", "scene": str(parsed["scene"])}


# ---------------------------------------------------------------- one arm


def rendering_params(args: argparse.Namespace, selection: str) -> RenderingParams:
    """The rendering pipeline's typed parameters for one arm (fine-tune on)."""
    groups = math.gcd(*args.channels, 8)
    renderer = {"image_size": args.image_size, "device": "cpu", "seed": args.seed,
                "block_out_channels": args.channels, "norm_num_groups": groups,
                "attention_head_dim": min(8, args.channels[-1]),
                "train_steps": args.pretrain_steps, "train_batch_size": args.batch_size,
                "learning_rate": args.learning_rate,
                "warmup_steps": max(1, min(50, args.pretrain_steps // 10)),
                "num_inference_steps": args.inference_steps}
    dp_finetune = {"enabled": True, "expected_batch_albums": args.dp_batch_albums,
                   "epochs": args.dp_epochs, "lr": args.dp_lr, "noise_multiplier": "auto"}
    return RenderingParams(seed=args.seed, selection=selection, renderer=renderer,
                           dp_finetune=dp_finetune)


def privacy_params(args: argparse.Namespace, arm: str) -> dict[str, Any]:
    """The arm's ``privacy:`` parameters (strictly checked by ``dpalbum.privacy``)."""
    shares = ({"semantic_query": args.query_share, "renderer": 1 - args.query_share}
              if arm == "semantic" else {"renderer": 1.0})
    return {"epsilon": args.epsilon, "delta": args.delta, "shares": shares,
            "max_grad_norm": 1.0, "physical_batch_rows": 32,
            "noise": "replayable",    # a benchmark: reproducible from --seed, NOT DP as released
            "album_count": "public",  # the demo world's N is known: no DP count
            "checkpoint_dir": None}   # short jobs, nothing to resume


@contextlib.contextmanager
def replayable_noise(seed: int) -> Iterator[None]:
    """Every DP draw of the block (query noise, Poisson batches, DP-SGD noise) replayable from
    ``seed``: ``privacy.noise: replayable`` reads its seed from ``$DPALBUM_NOISE_SEED`` only (never
    from parameters). Whoever knows the seed can subtract the noise, so the arms' outputs are NOT
    differentially private and their ledgers say so (``noise_source: replayable``); that is fine
    for a benchmark, which compares utility at equal ε and must be reproducible. A release uses
    the default ``privacy.noise: secure``."""
    saved = os.environ.get(SEED_ENV)
    os.environ[SEED_ENV] = str(int(seed))
    try:
        yield
    finally:
        if saved is None:
            del os.environ[SEED_ENV]
        else:
            os.environ[SEED_ENV] = saved


SELECTION_PARAMS = {"labeller": "public_labels", "label_columns": ["colour", "shape"], "k": 1}


def mechanism_specs(arm: str, rendering: RenderingParams) -> list[dict[str, Any]]:
    """The arm's mechanisms, specified as ``privacy.mechanism_catalogue`` plans them in the
    pipeline (the catalogue itself also wants the text path's LMs, which no arm trains)."""
    finetune = rendering.dp_finetune
    specs = [{"name": "renderer", "kind": "dpsgd",
              "expected_batch_albums": finetune["expected_batch_albums"],
              "epochs": finetune["epochs"], "noise_multiplier": finetune["noise_multiplier"]}]
    if arm == "semantic":  # one album adds 1 to each of at most k labels: L2 sensitivity √k
        specs = [{"name": "semantic_query", "kind": "gaussian",
                  "l2_sensitivity": SELECTION_PARAMS["k"] ** 0.5,
                  "noise_multiplier": "auto"}, *specs]
    return specs


def plan_and_select(world: dict[str, Any], args: argparse.Namespace, arm: str,
                    rendering: RenderingParams, account: privacy.PrivacyAccount,
                    ) -> tuple[dict, pd.DataFrame, dict]:
    """The arm's privacy plan (refused if over budget, before any private read), registered on
    the arm's privacy account, and, for the semantic arm, the PRIVIMAGE query (charged to the
    ledger and the account) and its public selection (dp_training's nodes)."""
    params = privacy_params(args, arm)
    dp_training = {"seed": args.seed, "semantic_query": SELECTION_PARAMS,
                   "selection": {"mode": "semantic", "fraction": args.selection_fraction,
                                 "min_count_in_noise_std": 2.0}}
    ledger = privacy.plan_privacy(params, len(world["train"]), mechanism_specs(arm, rendering))
    ledger["plan_id"] = uuid.uuid4().hex  # random, as plan_run makes it
    account.open_plan(ledger, privacy.dataset_key([a.album_id for a in world["train"]]))
    if arm != "semantic":
        return ledger, pd.DataFrame({"image_id": []}), {}
    labeller, public_labels = public_caption_labels_node(world["public"], dp_training)
    histogram, ledger = semantic_query_node(world["album_texts"], labeller, ledger, account,
                                            dp_training, params)
    selection = select_public_node(public_labels, histogram, dp_training)
    return ledger, selection, _selection_report(world, selection, histogram)


def _selection_report(world: dict, selection: pd.DataFrame, histogram: dict) -> dict[str, Any]:
    public = world["public"].set_index("image_id")
    chosen = public.loc[selection["image_id"]]
    protagonists = (chosen["colour"] + " " + chosen["shape"]).tolist()
    private = Counter(_labels(c)["protagonist"] for caps in world["album_texts"]["captions"]
                      for c in caps)
    top = np.argsort(histogram["noisy_counts"])[::-1][:8]
    return {"n_selected": len(selection), "n_public": len(public),
            "fraction": round(len(selection) / max(1, len(public)), 4),
            "share_of_selection_on_private_protagonists": round(float(np.mean(
                [p in private for p in protagonists])) if protagonists else 0.0, 4),
            "share_of_public_on_private_protagonists": round(float(np.mean(
                [f"{c} {s}" in private for c, s in zip(public["colour"], public["shape"])])), 4),
            "noise_std": round(histogram["noise_std"], 3),
            "top_noisy_labels": {histogram["labels"][i]: round(histogram["noisy_counts"][i], 1)
                                 for i in top}}


def verify(ledger: dict[str, Any], path: Path, verifier: Path) -> dict[str, Any]:
    """The independent verifiers' verdict on a written ledger: ``verifier`` (the project's own
    by default) and the team's shared one when it exists; verified only if every one passes."""
    privacy.write_ledger(ledger, path)
    if not verifier.is_file():
        return {"verified": None, "verifier": f"not found: {verifier.name}"}
    tools = dict.fromkeys([verifier, *([SHARED_VERIFIER] if SHARED_VERIFIER.is_file() else [])])
    running = [subprocess.Popen([sys.executable, str(tool), str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for tool in tools]  # in parallel
    verdicts = []
    for proc in running:
        out, err = proc.communicate(timeout=300)
        lines = out.strip().splitlines()
        verdicts.append((proc.returncode == 0, lines[-1] if lines else err.strip()))
    return {"verified": all(ok for ok, _ in verdicts),
            "verifier": "; ".join(line for _, line in verdicts)}


def evaluate(images: list[np.ndarray], labels: dict[str, list[str]], reference: dict[str, Any],
             network, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Local FD to the held-out private photos and train-on-these, test-on-held-out accuracy
    (with its binomial standard error over the held-out photos); also the images' features."""
    features = network.embed(images)
    out: dict[str, Any] = {"local_fd": round(frechet_distance(reference["features"], features), 3),
                           "n_images": len(images)}
    n_test = len(reference["features"])
    out["standard_error"] = {}  # binomial, over the held-out photos (not across training runs)
    for task in TASKS:
        try:
            accuracy = fit_and_score(features, labels[task], reference["features"],
                                     reference["labels"][task], seed)
            out[f"accuracy_{task}"] = round(accuracy, 4)
            out["standard_error"][f"accuracy_{task}"] = round(
                math.sqrt(accuracy * (1 - accuracy) / n_test), 4)
        except ValueError as err:  # a single class among the training labels
            out[f"accuracy_{task}"] = None
            out[f"accuracy_{task}_note"] = str(err)
    return out, features


def bootstrap_fd(real: np.ndarray, fakes: dict[str, np.ndarray], n: int,
                 seed: int) -> dict[str, Any]:
    """Paired bootstrap of the local FD: every draw resamples the held-out photos once and each
    arm's rendered images, so arms are compared on the same real sample. Measures the metric's
    sampling noise only (one training run per arm, not training-seed variance)."""
    if n <= 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = {arm: [] for arm in fakes}
    for _ in range(n):
        real_sample = real[rng.integers(len(real), size=len(real))]
        for arm, fake in fakes.items():
            draws[arm].append(frechet_distance(real_sample,
                                               fake[rng.integers(len(fake), size=len(fake))]))
    out: dict[str, Any] = {"n_resamples": n, "interval_95": {
        arm: [round(float(np.percentile(v, 2.5)), 3), round(float(np.percentile(v, 97.5)), 3)]
        for arm, v in draws.items()}}
    if "semantic" in draws:
        out["share_of_draws_semantic_lowest"] = {
            other: round(float(np.mean(np.array(draws["semantic"]) < np.array(v))), 3)
            for other, v in draws.items() if other != "semantic"}
    return out


def run_arm(arm: str, world: dict[str, Any], args: argparse.Namespace, reference: dict,
            network, folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Plan (and query), pre-train, render, DP fine-tune, render, verify the ledger. Returns the
    features of the fine-tuned renderer's images and the arm's report. The arm charges its own
    privacy account; its noise is replayable from ``--seed`` (a benchmark, not a release)."""
    with replayable_noise(args.seed):
        return _run_arm(arm, world, args, reference, network, folder)


def _run_arm(arm: str, world: dict[str, Any], args: argparse.Namespace, reference: dict,
             network, folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    rendering = rendering_params(args, arm)
    account = privacy.PrivacyAccount(folder / f"privacy_account_{arm}.json")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    ledger, selection, selection_report = plan_and_select(world, args, arm, rendering, account)
    timings["plan_and_query"] = time.perf_counter() - started
    # The prompts stand for what an ideal DP text path would sample under this arm's plan: they
    # carry its id, as the sampling node stamps it, so the render node's stale check applies.
    curated = world["curated"].copy()
    curated.attrs = {"sampling": {"privacy_plan_id": ledger["plan_id"],
                                  "source": "captions of fresh demo-world albums (benchmark)"}}

    started = time.perf_counter()
    pretraining_set = select_renderer_pretraining_data_node(world["public"], selection, rendering)
    renderer = pretrain_renderer_node(pretraining_set, rendering)
    timings["pretrain"] = time.perf_counter() - started
    pretrain_report = {k: renderer.training_report.get(k) for k in
                       ("n_images", "steps", "batch_size", "final_loss", "seconds")}

    prompt_labels = {t: [_labels(c)[t] for caps in world["curated"]["captions"] for c in caps]
                     for t in TASKS}

    def render() -> tuple[dict[str, Any], np.ndarray]:
        began = time.perf_counter()
        albums, _ = render_albums_node(renderer, curated, ledger, account, rendering)
        images = [p.image for a in albums for p in a.photos]
        metrics, features = evaluate(images, prompt_labels, reference, network, args.seed)
        return {**metrics, "render_seconds": round(time.perf_counter() - began, 1)}, features

    before, _ = render()  # post-processing of the query only: free
    started = time.perf_counter()
    renderer, ledger, _history = dp_finetune_renderer_node(
        renderer, world["train"], world["album_texts"], ledger, account, rendering,
        privacy_params(args, arm))
    timings["dp_finetune"] = time.perf_counter() - started
    after, features = render()
    check = verify(ledger, folder / f"ledger_{arm}.json", args.verifier)
    return features, {
        "pretraining": {"data": {"semantic": "semantically selected public subset",
                                 "all": "all public data", "none": "none (random init)"}[arm],
                        **pretrain_report},
        **({"selection": selection_report} if selection_report else {}),
        "privacy": {"epsilon": ledger["epsilon"], "epsilon_rdp": ledger.get("epsilon_rdp"),
                    "delta": ledger["delta"], "unit": ledger["unit"],
                    "noise_source": ledger.get("noise_source"),
                    "account_epsilon": round(account.epsilon(
                        privacy.dataset_key([a.album_id for a in world["train"]]),
                        ledger["delta"]), 4),
                    "mechanisms": [{k: m.get(k) for k in ("name", "kind", "noise_multiplier",
                                                          "sample_rate", "steps",
                                                          "epsilon_alone", "status")}
                                   for m in ledger["mechanisms"]], **check},
        "after_dp_finetune": after,
        "before_dp_finetune": before,
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }


# ---------------------------------------------------------------- main


def _reference(world: dict[str, Any], network, seed: int) -> tuple[dict, dict]:
    """Held-out private photos (features, true labels) and the real-data reference metrics."""
    heldout, heldout_captions = world["heldout"]
    images, labels = _photo_labels(heldout, heldout_captions)
    reference = {"features": network.embed(images), "labels": labels}
    train_captions = dict(zip(world["album_texts"]["album_id"], world["album_texts"]["captions"]))
    real_images, real_labels = _photo_labels(world["train"], train_captions)
    real, _ = evaluate(real_images, real_labels, reference, network, seed)
    majority = {f"majority_{t}": round(float(np.mean(np.array(labels[t]) == Counter(
        real_labels[t]).most_common(1)[0][0])), 4) for t in TASKS}
    return reference, {"private_train_photos": real, **majority, "n_heldout_photos": len(images)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="privimage_") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        world = make_world(args, folder)
        timings["world"] = time.perf_counter() - started
        started = time.perf_counter()
        network = train_evaluation_network(world["public"], EvaluationNetworkConfig(
            image_size=args.image_size, channels=args.eval_channels,
            feature_dim=args.eval_feature_dim, epochs=args.eval_epochs,
            max_train_images=args.eval_train_images, seed=args.seed, device="cpu"))
        timings["evaluation_network"] = time.perf_counter() - started
        reference, real = _reference(world, network, args.seed)
        arms, features = {}, {}
        for arm in ARMS:
            print(f"arm {arm} ...", flush=True)
            features[arm], arms[arm] = run_arm(arm, world, args, reference, network, folder)
            print(f"  {arm}: {arms[arm]['after_dp_finetune']}", flush=True)
        started = time.perf_counter()
        fd_noise = bootstrap_fd(reference["features"], features, args.bootstrap, args.seed)
        timings["bootstrap"] = time.perf_counter() - started
    fd = {a: arms[a]["after_dp_finetune"]["local_fd"] for a in ARMS}
    acc = {t: {a: arms[a]["after_dp_finetune"][f"accuracy_{t}"] for a in ARMS} for t in TASKS}
    result = {
        "benchmark": "PRIVIMAGE in miniature: renderer pre-trained on the semantically selected "
                     "public subset vs all public data vs nothing, each DP fine-tuned on the "
                     "private photos at the same total ε",
        "claim": "PRIVIMAGE: the selected subset gives the lowest FID and the highest downstream "
                 "accuracy at equal pre-training compute",
        "summary": {
            "local_fd": fd,
            **{f"accuracy_{t}": acc[t] for t in TASKS},
            "local_fd_bootstrap": fd_noise,
            "epsilon": {a: arms[a]["privacy"]["epsilon"] for a in ARMS},
            "ledgers_verified": {a: arms[a]["privacy"]["verified"] for a in ARMS},
            "semantic_best_fd": fd["semantic"] == min(fd.values()),
            **{f"semantic_best_accuracy_{t}": (
                acc[t]["semantic"] is not None and acc[t]["semantic"] == max(
                    v for v in acc[t].values() if v is not None)) for t in TASKS},
        },
        "arms": arms,
        "reference": real,
        "metrics": {
            "local_fd": "Fréchet distance between rendered images and held-out private photos on "
                        "the evaluation network's penultimate features (network trained on "
                        "PUBLIC images only); local, not comparable to published FID",
            "accuracy": "logistic regression (C by CV on the training side) on those features, "
                        "trained on the rendered images with the protagonist / scene parsed from "
                        "their prompts, tested on the held-out private photos' true labels",
            "before_dp_finetune": "the same metrics for the pre-trained renderer (semantic: "
                                  "after the query only), before any private photo is used",
        },
        "config": {k: (str(v.name) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("out",)},
        "world": {"n_public_images": len(world["public"]), "n_private_albums": len(world["train"]),
                  "n_private_photos": world["train"].n_photos,
                  "n_prompt_photos": int(sum(len(c) for c in world["curated"]["captions"])),
                  "prompts": "captions of fresh albums of the private distribution (demo world, "
                             "seed + 1), the same for every arm"},
        "seconds": {"total": round(time.perf_counter() - began, 1),
                    **{k: round(v, 1) for k, v in timings.items()}},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "machine": platform.machine(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "command": _command(sys.argv[1:] if argv is None else argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=_json_default) + "\n")
    print(f"local FD {fd}; accuracy {acc}; {result['seconds']['total']} s -> {args.out}")
    return result


def _command(argv: list[str]) -> str:
    """The command line, with path arguments shown by file name (no machine paths)."""
    shown = [Path(a).name if ("/" in a or os.sep in a) else a for a in argv]
    return " ".join(["python", "benchmarks/privimage.py", *shown])


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    main()
