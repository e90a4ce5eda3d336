"""imgrank: rank street-level images so a labelling team annotates the most useful first."""

import os
import warnings

# fastdup phones home (telemetry, version check) at import unless these are set first;
# FiftyOne tracks usage unless told not to. Nothing in imgrank may reach the internet.
os.environ.setdefault("SENTRY_OPT_OUT", "1")
os.environ.setdefault("FASTDUP_PRODUCTION", "1")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

# imgrank knowingly uses two Dagster APIs marked beta (Output(data_version=...) and
# backfill policies); the warning would repeat on every import and run.
warnings.filterwarnings("ignore", message=r".*is currently in beta.*")
