"""Project settings: config loader patterns and hooks (kedro-mlflow's hook registered here, less
its per-node parameter logging: see ``dpalbum.hooks.project_mlflow_hook``)."""

from kedro.config import OmegaConfigLoader

from dpalbum.albums.sources import RESOLVERS
from dpalbum.hooks import (
    FlatParamsHook,
    MlflowLineageHook,
    MlflowReleaseHook,
    NodeTimingHook,
    project_mlflow_hook,
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
    # An env (conf/local, --env) or `--params a.b=1` overrides single keys: the default
    # "destructive" merge would replace a whole top-level group (an env that sets one key of
    # `privacy` would drop the budget shares; `--params sampling.n_albums=60` would reset the
    # seed as soon as conf/local held any parameters file). Runtime params are merged into base
    # and env alike, so "soft" here covers them too.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
    # ${dpalbum.same_folder:...} and ${dpalbum.when:...}: every album entry follows albums_dir
    "custom_resolvers": RESOLVERS,
}

# pluggy calls the last registered hook first: kedro-mlflow's opens the run before the others
HOOKS = (FlatParamsHook(), MlflowLineageHook(), MlflowReleaseHook(), NodeTimingHook(),
         project_mlflow_hook())

# kedro-viz's run hooks write every dataset's row count and size (.viz/stats.json) and every
# load/save event to disk, private ones included: the exact number of private albums and photos,
# which the privacy plan only ever releases through its DP album count. The graph, and previews
# of public and released datasets (catalog metadata `dpalbum.access`), work without them.
# kedro-mlflow's own registration is replaced by project_mlflow_hook() in HOOKS above.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-viz", "kedro_mlflow")  # distribution names
