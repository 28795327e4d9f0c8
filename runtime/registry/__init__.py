"""The MLflow registry and what a registered version holds: `tracking` (the one module that
writes to MLflow: runs, params, metrics, artifacts, versions, aliases), `versions` (look-ups,
promote and rollback), `uris` (models:/NAME@ALIAS and models:/NAME/VERSION), `model_dir` (the
version's files, saved atomically, loaded without unpickling) and `pyfunc_model` (the MLflow
"model from code" entry point)."""
