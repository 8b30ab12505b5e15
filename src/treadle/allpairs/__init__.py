"""Native All-Pairs and Wavefront engines."""
