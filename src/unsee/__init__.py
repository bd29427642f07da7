"""unsee: make text-to-image diffusion models forget concepts, and measure it."""

__version__ = "0.1.0"
