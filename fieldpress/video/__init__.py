"""fieldpress.video."""
