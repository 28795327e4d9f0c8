"""`mlrt watch`: the closed loop. state (what survives restarts, the lock), decide (pure
decisions from monitoring reports), evidence (the one call into `mlrt monitor`), cycle (one
cycle: monitor, decide, record, act)."""
