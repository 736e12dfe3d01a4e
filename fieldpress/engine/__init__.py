"""fieldpress.engine."""
