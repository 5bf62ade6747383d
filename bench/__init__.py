"""Benchmarks of the engine: ratios against raw diffusers, scaling with the image, previews, cache and memory."""
