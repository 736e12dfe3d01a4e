"""fieldpress.scenes.viewer: `view-splat`, a browser viewer for Gaussian scenes built on viser.

- `splats`: GaussianScene -> centres, covariances, DC colours, opacities (what web renderers draw)
- `camera`: viser's browser camera <-> our `Camera`, and the first view framing a scene
- `server`: the viser server (chunked upload with progress, compare panel, render-PSNR button)
- `export`: a static folder (viser's client page + a `.viser` recording) for any static web server
- `browser`: headless Chromium over the DevTools protocol (tests, load benchmark, screenshots)
- `cli`: the `view-splat` command

viser is an optional dependency (`pip install 'fieldpress[viewer]'`), imported only when serving or
exporting.
"""

from __future__ import annotations

from fieldpress.scenes.viewer.export import export_static
from fieldpress.scenes.viewer.server import SplatViewer, ViewerConfig

__all__ = ["SplatViewer", "ViewerConfig", "export_static"]
