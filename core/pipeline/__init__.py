"""The pipeline: build a variant, run a recipe, the Ray executor."""
