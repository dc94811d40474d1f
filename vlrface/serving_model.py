"""The served pyfunc as MLflow "models from code": ``serving.save`` stores this file in the model
directory instead of a pickle of ``FaceDescriptor``, so loading a model runs only this code
(``vlrface`` must be importable where it is served) and no pickled object."""

from mlflow.models import set_model

from vlrface.serving import FaceDescriptor

set_model(FaceDescriptor())
