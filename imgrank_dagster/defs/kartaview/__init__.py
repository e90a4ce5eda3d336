"""The KartaView source in Dagster: discovery asset, its job, sensor and daily schedule."""
