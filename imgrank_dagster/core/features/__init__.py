"""Features: fastdup embeddings and image statistics, and the collection's image catalog."""
