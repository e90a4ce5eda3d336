"""Every partitions definition of the project, in one place."""

import dagster as dg

# One partition per collection declared in data/collections.yaml.
collection_partitions = dg.DynamicPartitionsDefinition(name="collections")
# One partition per capture run, keyed "<collection>.<sequence>" (see core.collections).
sequence_partitions = dg.DynamicPartitionsDefinition(name="sequences")
