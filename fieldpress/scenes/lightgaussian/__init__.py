"""fieldpress.scenes.lightgaussian."""
