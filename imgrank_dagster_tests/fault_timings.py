"""The fault suite's measurements: what README's reliability table reports.

Each fault test records how long recovery took (or a count). With IMGRANK_FAULT_TIMINGS set
to a file, they are appended to it as JSON lines; nothing is asserted about their size.
"""

import json
import os
import time


def record_timing(fault: str, value: float, unit: str = "s") -> None:
    target = os.environ.get("IMGRANK_FAULT_TIMINGS")
    if not target:
        return
    entry = {"fault": fault, "value": round(float(value), 2), "unit": unit, "at": time.time()}
    with open(target, "a") as handle:
        handle.write(json.dumps(entry) + "\n")
