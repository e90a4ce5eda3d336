"""imgrank: rank street-level images so a labelling team annotates the most useful first."""

import os

# fastdup phones home (telemetry, version check) at import unless these are set first;
# FiftyOne tracks usage unless told not to. Nothing in imgrank may reach the internet.
os.environ.setdefault("SENTRY_OPT_OUT", "1")
os.environ.setdefault("FASTDUP_PRODUCTION", "1")
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
