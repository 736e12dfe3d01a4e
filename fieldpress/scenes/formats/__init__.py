"""fieldpress.scenes.formats."""
