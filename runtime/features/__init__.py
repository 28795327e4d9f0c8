"""Preprocessing: the spec's ops fitted on the training split in one pass (`fit`), the fitted
state with its JSON form (`state`), and the transform that training, evaluation, batch
inference and serving all apply (`apply`), so that they cannot drift apart."""
