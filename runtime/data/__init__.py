"""Data: sources as lazy Ray Datasets (`sources`), Arrow types in mlrt's words (`arrow`), the
one-pass scan for checks, fingerprint, split and classes (`scan`), the training profile that
drift is measured against (`profile`), and the checked, split `Table` later stages read
(`table`)."""
