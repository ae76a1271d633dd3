"""VPR Sweep: reproducible experiment sweeps for visual place recognition."""
