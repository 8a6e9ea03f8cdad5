"""The file MLflow loads the served model from ("models from code": no pickled object in the model)."""

from mlflow.models import set_model

from pipeline.export.served import ImageClassifier

set_model(ImageClassifier())
