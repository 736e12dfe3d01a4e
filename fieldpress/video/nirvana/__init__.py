"""NIRVANA (Maiya et al., CVPR 2023): a video as groups of frames, one small patch-wise SIREN network
per group, warm-started from the previous group's and stored as quantized, entropy-coded residuals.

`model` (the network and its quantized reparameterisation), `grouping` (fixed and adaptive groups),
`fit` (the per-group fit behind ``fit-video --model nirvana``), `codec` (the ``video/nirvana`` file)
and `declaration` (the light codec entry point). The format: docs/formats/nirvana.md.
"""
