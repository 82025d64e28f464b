"""Project settings: config loader patterns and hooks (kedro-mlflow registers its own hooks)."""

from kedro.config import OmegaConfigLoader

from dpalbum.hooks import FlatParamsHook, MlflowReleaseHook, NodeTimingHook

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}

HOOKS = (FlatParamsHook(), MlflowReleaseHook(), NodeTimingHook())
