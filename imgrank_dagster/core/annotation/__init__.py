"""Closing the loop with an annotation tool: the next batch goes out, labels come back.

- `batch`: which images to send (a window on the ranking) and what a task looks like;
- `client`: Label Studio's REST API over `requests` (URL and token from the environment);
- `send`: sending a batch to Label Studio (or as a CVAT task file) and the record of it;
- `sync`: fetching submitted annotations into the collection's labels folder, in Label
  Studio's own JSON export format;
- `cvat`: the CVAT for images 1.1 task file of a batch (no CVAT server needed).
"""
