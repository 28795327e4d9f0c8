"""Training: model builders (`models`), the one torch training loop (`loop`), the train stage on
Ray Train or a Ray task (`train`), the hyperparameter search on Ray Tune (`tune`), and metrics
with the evaluation gate (`evaluate`)."""
