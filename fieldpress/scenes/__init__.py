"""fieldpress.scenes."""
