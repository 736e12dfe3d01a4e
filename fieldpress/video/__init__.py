"""fieldpress.video: neural video codecs (latent grids, NeRV, HNeRV, NeRV++, HiNeRV, NIRVANA) written as
``.fpv`` files.

    fit-video clip.mp4 --preset preview        # the latent-grid codec on the CPU -> clip.fpv
    decode-video clip.fpv -o out.mp4           # or -o frames/ for PNGs; --frames S:E for random access

Python: ``fieldpress.video.pipeline.compress(clip, FitOptions(...), device)`` -> a `Result` (the file's
bytes and metrics; ``.write(path)``), ``fieldpress.video.codec.open_video(path).decode(start, end)`` ->
uint8 (N, H, W, 3). The file format: docs/formats/video.md.
The codecs are registered by entry point (``fieldpress.codecs``: video/hnerv, video/nerv, video/nervpp;
see ``fieldpress.video.codecs``); importing this package imports nothing heavy.
"""
