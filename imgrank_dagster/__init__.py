"""imgrank: rank street-level images so a labelling team annotates the most useful first."""

import os
import warnings

# fastdup phones home (telemetry, version check) at import unless these are set first;
# FiftyOne tracks usage unless told not to. Nothing in imgrank may reach the internet.
os.environ.setdefault("SENTRY_OPT_OUT", "1")
os.environ.setdefault("FASTDUP_PRODUCTION", "1")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
# OpenMP threads (FAISS, its BLAS, scikit-learn) sleep instead of spinning while they wait:
# on cores shared with other steps or processes, spinning threads steal the cores the others
# need (measured on 2 shared cores: FAISS k-means 3x slower with spinning, no gain alone).
# Read when an OpenMP runtime loads, so it is set before any of them is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# imgrank knowingly uses two Dagster APIs marked beta (Output(data_version=...) and
# backfill policies); the warning would repeat on every import and run.
warnings.filterwarnings("ignore", message=r".*is currently in beta.*")
