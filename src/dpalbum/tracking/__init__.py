"""What each ``kedro run`` leaves in MLflow, and what it must never leave there.

One MLflow run per ``kedro run`` (kedro-mlflow's), in the store at the project root
(:mod:`.store`: ``sqlite:///mlflow.db`` of ``mlflow.yml`` is anchored there, whatever the working
directory; artifacts under ``mlruns/``). On that RELEASED run:

- parameters, flattened (``dpalbum.hooks.FlatParamsHook``; never a noise seed);
- lineage tags (:mod:`.lineage`): ``dpalbum.git.commit`` / ``dpalbum.git.dirty`` /
  ``dpalbum.git.diff_sha256`` and ``dpalbum.dvc.lock_sha256``;
- the privacy ledger as tags (``privacy.epsilon``, ``privacy.delta``, ``privacy.unit``,
  ``privacy.noise_source``, ...) and as the artifact ``privacy/<ledger>.json``;
- ``dpsgd.<mechanism>.epsilon_spent``: the ε spent up to each DP-SGD step (from the ledger:
  public; at most 20 points per mechanism, the last one the ledger's ε);
- the model folders as artifacts (``models/<entry>``) and the released models as MLflow models
  (:mod:`.release`): ``summary_lm`` and ``caption_lm`` (transformers flavour, text generation),
  ``renderer`` (pyfunc: prompts in, PNG out), each tagged with its ledger; registered as
  ``dpalbum-summary-lm``, ``dpalbum-caption-lm``, ``dpalbum-renderer`` with ε in the version
  description, unless the run is a non-private baseline or its noise is replayable.

INTERNAL numbers (computed on private data outside the ledger) never go on the released run: the
DP-SGD losses, clipped fractions and Poisson batch sizes go to a run of the experiment
``<experiment>-internal`` tagged ``dpalbum.internal=true``
(:func:`.lineage.log_internal_histories`).

Nothing is imported here: the renderer's MLflow model bundles this package's code and loads
``dpalbum.tracking.renderer_pyfunc`` where neither Kedro nor kedro-mlflow is installed. The catalog
type is ``dpalbum.tracking.release.MlflowModelReleaseDataset``.
"""
