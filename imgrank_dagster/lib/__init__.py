"""The Dagster helpers every domain of defs/ uses: names, partitions, resources, IO manager,
metadata. Nothing here knows a ranking algorithm."""
