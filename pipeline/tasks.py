"""The two tasks a run can have, as data.task resolves them (pipeline.data.sources): one label an image, or
any number of labels an image. Dependency-free, so data, models and stages all name them from here."""

MULTICLASS = "multiclass"
MULTILABEL = "multilabel"
