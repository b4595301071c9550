"""Global geometry and lens distortion with spatial transformer modules (issue 6; in progress)."""
