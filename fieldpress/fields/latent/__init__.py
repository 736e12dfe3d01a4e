"""Latent-grid image codec (Cool-chic/C3 style): fit a latent pyramid + tiny decoder to one image.

- `fit.fit_latent_image(image, config, lambda_, steps or seconds)` trains with MSE + lambda * rate
- `codec.encode(model, lambda_, target) -> (header, streams)`; `codec.decode(header, streams)`
"""
