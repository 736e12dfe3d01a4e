"""fieldpress.scenes.viewer."""
