"""mfsr: multi-frame super-resolution for handheld bursts and satellite passes."""

__version__ = "0.1.0"
