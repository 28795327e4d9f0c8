"""The driver: one spec's stages in order, the run it records in MLflow (`driver`), and what a
run records about itself besides metrics (`record`). `mlrt run`, `mlrt submit` (inside the
Ray job) and the watcher's retrains all run `driver.run_job`."""
