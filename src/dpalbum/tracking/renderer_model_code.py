"""MLflow "model from code" of the renderer: logged with the model and run when it is loaded, so
nothing is pickled (the weights are the renderer folder's safetensors)."""

from mlflow.models import set_model

from dpalbum.tracking.renderer_pyfunc import RendererModel

set_model(RendererModel())
