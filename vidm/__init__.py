"""vidm: diffusion video generation and frame interpolation.

A content model makes a video's first latent frame, a motion model makes the following
frames (and the frames between two given ones), a frame autoencoder maps pixels to latents.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy: `import vidm` (and `vidm --help`) must not pull in torch.
    if name == "VideoPipeline":
        from vidm.pipeline import VideoPipeline

        return VideoPipeline
    raise AttributeError(f"module 'vidm' has no attribute {name!r}")
